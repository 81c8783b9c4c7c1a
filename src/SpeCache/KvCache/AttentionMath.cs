using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SpeCache.KvCache;

/// <summary>Small pieces of attention every policy shares.</summary>
public static class AttentionMath
{
    /// <summary>Rows from this long take the vectorized exponential; shorter ones the plain loop.</summary>
    const int VectorFrom = 512;

    /// <summary>
    /// Softmax in place. Short rows use a plain loop: TensorPrimitives.SoftMax measured 4.6x slower on
    /// 200 values. Long rows (long contexts) use the vector exponential, which wins once a row has
    /// thousands of scores.
    /// </summary>
    public static void SoftMax(Span<float> x)
    {
        float sum = ExpSum(x, TensorPrimitives.Max(x), x);
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }

    /// <summary>
    /// dest = e^(x - shift), returning Σ dest: the unnormalized softmax for a caller that divides by
    /// the sum later (once per output, not once per weight) and knows a shift at or above the max.
    /// <paramref name="dest"/> may be <paramref name="x"/>.
    /// </summary>
    public static float ExpSum(ReadOnlySpan<float> x, float shift, Span<float> dest)
    {
        if (dest.Length < x.Length) throw new ArgumentException($"{x.Length} exponentials need as many places, got {dest.Length}", nameof(dest));
        float sum = 0;
        int i = 0;
        if (x.Length >= VectorFrom && Vector512.IsHardwareAccelerated)
        {
            // Shift, exponential and sum in one pass over the row (the library's three calls were
            // three passes over 32K-score rows, every step, every head).
            ref float px = ref MemoryMarshal.GetReference(x);
            ref float pd = ref MemoryMarshal.GetReference(dest);
            var by = Vector512.Create(shift);
            var total = Vector512<float>.Zero;
            for (; i + 16 <= x.Length; i += 16)
            {
                var e = Exp(Vector512.LoadUnsafe(ref px, (nuint)i) - by);
                e.StoreUnsafe(ref pd, (nuint)i);
                total += e;
            }
            sum = Vector512.Sum(total);
        }
        else if (x.Length >= VectorFrom && Vector256.IsHardwareAccelerated)
        {
            ref float px = ref MemoryMarshal.GetReference(x);
            ref float pd = ref MemoryMarshal.GetReference(dest);
            var by = Vector256.Create(shift);
            var total = Vector256<float>.Zero;
            for (; i + 8 <= x.Length; i += 8)
            {
                var e = Exp(Vector256.LoadUnsafe(ref px, (nuint)i) - by);
                e.StoreUnsafe(ref pd, (nuint)i);
                total += e;
            }
            sum = Vector256.Sum(total);
        }
        else if (x.Length >= VectorFrom)
        {
            TensorPrimitives.Subtract(x, shift, dest);
            TensorPrimitives.Exp(dest[..x.Length], dest);
            return TensorPrimitives.Sum(dest[..x.Length]);
        }
        for (; i < x.Length; i++)
        {
            float e = MathF.Exp(x[i] - shift);
            dest[i] = e;
            sum += e;
        }
        return sum;
    }

    /// <summary>
    /// e^x in single precision for softmax inputs (x &lt;= 0 there; accurate to about 2 ulp up to 88,
    /// 0 below -87.3, NaN stays NaN), inlined. The library's Vector512.Exp is an out-of-line call that
    /// works in double precision: with the sum around it, 14 % of a 32K-token specache decode step.
    /// Range reduction e^x = 2^n e^r with n = round(x log2 e), |r| &lt;= ln2 / 2 (ln 2 in two parts, so
    /// r keeps its bits), and Cephes' single-precision polynomial for e^r.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var clamped = Vector512.Min(x, Vector512.Create(88.7f));
        var n = Vector512.Round(clamped * Vector512.Create(1.44269504088896341f));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), clamped);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var p = Vector512.Create(1.9875691500e-4f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        p = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        var twoToN = (Vector512.ConvertToInt32Native(n) + Vector512.Create(127) << 23).AsSingle();
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(-87.33f)), Vector512<float>.Zero, p * twoToN);
    }

    /// <summary><see cref="Exp(Vector512{float})"/> in 256 bits, for CPUs without AVX-512 (the library's Vector256.Exp is out of line and in double too).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        var clamped = Vector256.Min(x, Vector256.Create(88.7f));
        var n = Vector256.Round(clamped * Vector256.Create(1.44269504088896341f));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), clamped);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
        var p = Vector256.Create(1.9875691500e-4f);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.3981999507e-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(8.3334519073e-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(4.1665795894e-2f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.6666665459e-1f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(5.0000001201e-1f));
        p = Vector256.FusedMultiplyAdd(p, r * r, r + Vector256<float>.One);
        var twoToN = (Vector256.ConvertToInt32Native(n) + Vector256.Create(127) << 23).AsSingle();
        return Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(-87.33f)), Vector256<float>.Zero, p * twoToN);
    }

    /// <summary>
    /// dest[t] = max over the rows j of (rows[j × stride + t] - shifts[j]), for t below dest's length:
    /// the GQA aggregation of several heads' scores, each shifted by its own max, in one pass over the
    /// rows (three library passes per head before).
    /// </summary>
    public static void MaxOfShifted(ReadOnlySpan<float> rows, int stride, ReadOnlySpan<float> shifts, Span<float> dest)
    {
        int n = dest.Length, count = shifts.Length;
        if (count == 0) throw new ArgumentException("no rows to take the max of", nameof(shifts));
        if (stride < n || rows.Length < (count - 1L) * stride + n)
            throw new ArgumentException($"{count} rows of {n} at a stride of {stride} need {(count - 1L) * stride + n} values, got {rows.Length}", nameof(rows));
        int t = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ref float r = ref MemoryMarshal.GetReference(rows);
            ref float o = ref MemoryMarshal.GetReference(dest);
            for (; t + 16 <= n; t += 16)
            {
                var best = Vector512.LoadUnsafe(ref r, (nuint)t) - Vector512.Create(shifts[0]);
                for (int j = 1; j < count; j++)
                    best = Vector512.Max(best, Vector512.LoadUnsafe(ref r, (nuint)(j * stride + t)) - Vector512.Create(shifts[j]));
                best.StoreUnsafe(ref o, (nuint)t);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            ref float r = ref MemoryMarshal.GetReference(rows);
            ref float o = ref MemoryMarshal.GetReference(dest);
            for (; t + 8 <= n; t += 8)
            {
                var best = Vector256.LoadUnsafe(ref r, (nuint)t) - Vector256.Create(shifts[0]);
                for (int j = 1; j < count; j++)
                    best = Vector256.Max(best, Vector256.LoadUnsafe(ref r, (nuint)(j * stride + t)) - Vector256.Create(shifts[j]));
                best.StoreUnsafe(ref o, (nuint)t);
            }
        }
        for (; t < n; t++)
        {
            float best = rows[t] - shifts[0];
            for (int j = 1; j < count; j++) best = MathF.Max(best, rows[j * stride + t] - shifts[j]);
            dest[t] = best;
        }
    }

    /// <summary>
    /// Softmax weights below this change no output bit (float keeps 24 bits of a sum whose largest
    /// weight is near 1), and multiplying by them makes subnormals, which cost x86 ~100 cycles each:
    /// the policies skip them or set them to 0.
    /// </summary>
    public const float NegligibleWeight = 1e-30f;

    /// <summary>Sets the values below <paramref name="threshold"/> to 0 (softmax weights too small to change a sum, before kernels that cannot skip them).</summary>
    public static void ZeroBelow(Span<float> x, float threshold)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ref float p = ref MemoryMarshal.GetReference(x);
            var limit = Vector512.Create(threshold);
            for (; i + 16 <= x.Length; i += 16)
            {
                var v = Vector512.LoadUnsafe(ref p, (nuint)i);
                Vector512.AndNot(v, Vector512.LessThan(v, limit)).StoreUnsafe(ref p, (nuint)i); // a NaN stays NaN
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            ref float p = ref MemoryMarshal.GetReference(x);
            var limit = Vector256.Create(threshold);
            for (; i + 8 <= x.Length; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref p, (nuint)i);
                Vector256.AndNot(v, Vector256.LessThan(v, limit)).StoreUnsafe(ref p, (nuint)i);
            }
        }
        for (; i < x.Length; i++)
            if (x[i] < threshold) x[i] = 0;
    }

    /// <summary>Heads as narrow as the tiny models' (8 values) cost more in TensorPrimitives' call overhead than in arithmetic; plain loops win below this.</summary>
    const int ShortRow = 32;

    /// <summary>
    /// a·b, with a plain loop for short rows. Heads of a multiple of 16 values (64, 128) take an
    /// inlined loop of 512-bit multiply-adds (256-bit without AVX-512): a 32K-token decode step calls this 17 million times
    /// (16 layers × 32 query heads × 32K positions), and TensorPrimitives' general entry (lengths,
    /// alignment, remainders) cost more than the 4 multiply-adds of a 64-value head.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (Vector512.IsHardwareAccelerated && a.Length % 16 == 0 && a.Length > 0 && b.Length >= a.Length)
        {
            ref float pa = ref MemoryMarshal.GetReference(a);
            ref float pb = ref MemoryMarshal.GetReference(b);
            var products = Vector512<float>.Zero;
            for (nuint i = 0; i < (nuint)a.Length; i += 16)
                products = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref pa, i), Vector512.LoadUnsafe(ref pb, i), products);
            return Vector512.Sum(products);
        }
        if (Vector256.IsHardwareAccelerated && a.Length % 16 == 0 && a.Length > 0 && b.Length >= a.Length)
        {
            ref float pa = ref MemoryMarshal.GetReference(a);
            ref float pb = ref MemoryMarshal.GetReference(b);
            var products = Vector256<float>.Zero;
            for (nuint i = 0; i < (nuint)a.Length; i += 8)
                products = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref pa, i), Vector256.LoadUnsafe(ref pb, i), products);
            return Vector256.Sum(products);
        }
        if (a.Length >= ShortRow) return TensorPrimitives.Dot(a, b);
        float sum = 0;
        for (int i = 0; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>accumulator += x · scale, with a plain loop for short rows and, as in <see cref="Dot"/>, an inlined one for heads of a multiple of 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MultiplyAdd(ReadOnlySpan<float> x, float scale, Span<float> accumulator)
    {
        if (Vector512.IsHardwareAccelerated && x.Length % 16 == 0 && x.Length > 0 && accumulator.Length >= x.Length)
        {
            ref float px = ref MemoryMarshal.GetReference(x);
            ref float pa = ref MemoryMarshal.GetReference(accumulator);
            var s = Vector512.Create(scale);
            for (nuint i = 0; i < (nuint)x.Length; i += 16)
                Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref px, i), s, Vector512.LoadUnsafe(ref pa, i)).StoreUnsafe(ref pa, i);
            return;
        }
        if (Vector256.IsHardwareAccelerated && x.Length % 16 == 0 && x.Length > 0 && accumulator.Length >= x.Length)
        {
            ref float px = ref MemoryMarshal.GetReference(x);
            ref float pa = ref MemoryMarshal.GetReference(accumulator);
            var s = Vector256.Create(scale);
            for (nuint i = 0; i < (nuint)x.Length; i += 8)
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref px, i), s, Vector256.LoadUnsafe(ref pa, i)).StoreUnsafe(ref pa, i);
            return;
        }
        if (x.Length >= ShortRow)
        {
            TensorPrimitives.MultiplyAdd(x, scale, accumulator, accumulator);
            return;
        }
        for (int i = 0; i < x.Length; i++) accumulator[i] += x[i] * scale;
    }
}
