using System.Numerics.Tensors;

namespace SpeCache.KvCache;

/// <summary>Small pieces of attention every policy shares.</summary>
public static class AttentionMath
{
    /// <summary>Rows from this long take the vectorized exponential; shorter ones the plain loop.</summary>
    const int VectorFrom = 512;

    /// <summary>
    /// Softmax in place. Short rows use a plain loop: TensorPrimitives.SoftMax measured 4.6x slower on
    /// 200 values. Long rows (long contexts) use TensorPrimitives.Exp, whose vector exponential wins
    /// once a row has thousands of scores.
    /// </summary>
    public static void SoftMax(Span<float> x)
    {
        float max = TensorPrimitives.Max(x);
        float sum;
        if (x.Length >= VectorFrom)
        {
            TensorPrimitives.Subtract(x, max, x);
            TensorPrimitives.Exp(x, x);
            sum = TensorPrimitives.Sum(x);
        }
        else
        {
            sum = 0;
            for (int i = 0; i < x.Length; i++)
            {
                float e = MathF.Exp(x[i] - max);
                x[i] = e;
                sum += e;
            }
        }
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }

    /// <summary>Heads as narrow as the tiny models' (8 values) cost more in TensorPrimitives' call overhead than in arithmetic; plain loops win below this.</summary>
    const int ShortRow = 32;

    /// <summary>a·b, with a plain loop for short rows.</summary>
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length >= ShortRow) return TensorPrimitives.Dot(a, b);
        float sum = 0;
        for (int i = 0; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>accumulator += x · scale, with a plain loop for short rows.</summary>
    public static void MultiplyAdd(ReadOnlySpan<float> x, float scale, Span<float> accumulator)
    {
        if (x.Length >= ShortRow)
        {
            TensorPrimitives.MultiplyAdd(x, scale, accumulator, accumulator);
            return;
        }
        for (int i = 0; i < x.Length; i++) accumulator[i] += x[i] * scale;
    }
}
