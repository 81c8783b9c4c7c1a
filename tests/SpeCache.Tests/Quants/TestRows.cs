using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

/// <summary>Deterministic test rows: Gaussian values, and Gaussian values with a few large outliers.</summary>
public static class TestRows
{
    public static float[] Gaussian(int n, int seed, float sigma = 1f)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            x[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return x;
    }

    /// <summary>Like LLM weights and activations: mostly small values, one in ~100 about 30 times larger.</summary>
    public static float[] WithOutliers(int n, int seed)
    {
        var x = Gaussian(n, seed);
        var rng = new Random(seed + 1);
        for (int i = 0; i < n; i++)
            if (rng.Next(100) == 0) x[i] *= 30;
        return x;
    }

    public static byte[] Quantize(GgmlType type, float[] x)
    {
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, x.Length)];
        WeightFormats.QuantizeRow(type, x, bytes);
        return bytes;
    }

    public static float[] Dequantize(GgmlType type, byte[] bytes, int n)
    {
        var y = new float[n];
        WeightFormats.DequantizeRow(type, bytes, y);
        return y;
    }

    /// <summary>An activation row in the format <paramref name="type"/> is dotted with.</summary>
    public static byte[] Activation(GgmlType type, float[] x)
    {
        var t = TypeTraits.Of(type);
        var bytes = new byte[GgmlTypeInfo.RowBytes(t.ActivationType, x.Length)];
        t.QuantizeActivation(x, bytes);
        return bytes;
    }

    public static float[] DequantizeActivation(GgmlType type, byte[] bytes, int n)
    {
        var a = TypeTraits.Of(type).ActivationType;
        var y = new float[n];
        if (a == GgmlType.Q8_K) Q8_K.DequantizeRow(bytes, y);
        else WeightFormats.DequantizeRow(a, bytes, y);
        return y;
    }
}
