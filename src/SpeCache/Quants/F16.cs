using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SpeCache.Quants;

/// <summary>IEEE half-precision weights; dotted with float activations, converted in registers.</summary>
public static unsafe class F16
{
    public static void DequantizeRow(ReadOnlySpan<byte> source, Span<float> destination) =>
        ToSingle(MemoryMarshal.Cast<byte, Half>(source)[..destination.Length], destination);

    /// <summary>
    /// Halves to floats, exactly as <c>(float)Half</c>. TensorPrimitives.ConvertToSingle measured
    /// ~5 ns per value here (it does not use a wide path for Half), which made converting an F16
    /// KV cache cost more than the attention that reads it; this is the vector bit conversion.
    /// </summary>
    public static void ToSingle(ReadOnlySpan<Half> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source");
        fixed (Half* s = source)
        fixed (float* d = destination)
            ToSingle((ushort*)s, d, source.Length);
    }

    /// <summary><see cref="ToSingle(ReadOnlySpan{Half}, Span{float})"/> on pointers, inlined into the attention kernels (the full cache's tiles of positions, a KIVI key group's scales and zeros).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ToSingle(ushort* source, float* destination, int count)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= count; i += 16)
                QuantMath.HalfToSingle(Vector512.WidenLower(Vector256.Load(source + i).ToVector512Unsafe())).Store(destination + i);
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= count; i += 8)
                QuantMath.HalfToSingle(Vector256.WidenLower(Vector128.Load(source + i).ToVector256Unsafe())).Store(destination + i);
        for (; i < count; i++) destination[i] = QuantMath.ToFloat(source[i]);
    }

    /// <summary>
    /// <see cref="ToSingle(ushort*, float*, int)"/> for halves known to hold no infinity or NaN
    /// (<see cref="AnyInfinityOrNaN"/>), with the shorter conversion: a full-cache decode step
    /// converts every key and value of the context, and on CPUs without AVX-512 the 9-operation
    /// conversion took half of it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void FiniteToSingle(ushort* source, float* destination, int count)
    {
        int i = 0;
        short* halves = (short*)source;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= count; i += 16)
                QuantMath.FiniteHalfToSingle(Vector512.WidenLower(Vector256.Load(halves + i).ToVector512Unsafe())).Store(destination + i);
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= count; i += 8)
                QuantMath.FiniteHalfToSingle(Vector256.WidenLower(Vector128.Load(halves + i).ToVector256Unsafe())).Store(destination + i);
        for (; i < count; i++) destination[i] = QuantMath.ToFloat(source[i]);
    }

    /// <summary>Whether any of the halves (as their bits) is an infinity or a NaN: all five exponent bits set.</summary>
    public static bool AnyInfinityOrNaN(ReadOnlySpan<ushort> halves)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref ushort h = ref MemoryMarshal.GetReference(halves);
            var exponent = Vector256.Create((ushort)0x7C00);
            var found = Vector256<ushort>.Zero;
            for (; i + 16 <= halves.Length; i += 16)
                found |= Vector256.Equals(Vector256.LoadUnsafe(ref h, (nuint)i) & exponent, exponent);
            if (found != Vector256<ushort>.Zero) return true;
        }
        for (; i < halves.Length; i++)
            if ((halves[i] & 0x7C00) == 0x7C00) return true;
        return false;
    }

    /// <summary>Round to nearest even, as ggml's <c>GGML_FP32_TO_FP16</c>.</summary>
    public static void QuantizeRow(ReadOnlySpan<float> source, Span<byte> destination) =>
        TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<byte, Half>(destination)[..source.Length]);

    /// <summary>Dot of an F16 weight row with a float activation row (given as its bytes).</summary>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        if (Vector512.IsHardwareAccelerated) return Dot512(w, x, cols);
        if (Vector256.IsHardwareAccelerated) return Dot256(w, x, cols);
        return DotScalar(w, x, cols, 0, 0f);
    }

    internal static float DotScalar(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols, int start, float sum)
    {
        var h = MemoryMarshal.Cast<byte, ushort>(w);
        var f = MemoryMarshal.Cast<byte, float>(x);
        for (int i = start; i < cols; i++) sum += QuantMath.ToFloat(h[i]) * f[i];
        return sum;
    }

    /// <summary>
    /// x times 2^112 (<see cref="QuantMath.HalfRebias"/>) into <paramref name="scaled"/> (exact: a
    /// power of two), the other factor of halves read 2^-112 times their value (<see cref="ScaledHalves"/>:
    /// F16 weights, the full cache's keys); false, writing nothing, when a value is NaN
    /// or 2^16 or more in size (the product would overflow), so the caller takes the exact
    /// conversion instead.
    /// </summary>
    public static bool ScaleActivations(ReadOnlySpan<float> x, Span<float> scaled)
    {
        if (!CanScale(x)) return false;
        TensorPrimitives.Multiply(x, QuantMath.HalfRebias, scaled[..x.Length]);
        return true;
    }

    /// <summary>Whether every value of <paramref name="x"/> can take the 2^112 of <see cref="ScaleActivations"/>: no NaN, none 2^16 or more in size.</summary>
    public static bool CanScale(ReadOnlySpan<float> x) => MathF.Abs(TensorPrimitives.MaxMagnitude(x)) < 65536f;

    /// <summary>
    /// Whether F16 weights (<paramref name="halvesFinite"/>: none infinite or NaN) against these
    /// <paramref name="n"/> activation rows take <c>HalfTiles&lt;ScaledHalves&gt;</c>, the short
    /// conversion (a sign-extending load, a shift and a mask instead of nine operations; .NET 10 has
    /// no F16C) against activations times 2^112, which gives the exact dot's bits: where the weights
    /// are read in place (and on AVX2, where more rows take the row dots), and only when no
    /// activation is too large to scale. The 512-bit table converts each weight once for all rows,
    /// so the exact conversion costs little there, and the scaled one's tiny floats measured slower
    /// (MatMulBench gemm 1 F16, 512 rows, two threads: 105-110 against 100 GOPS).
    /// </summary>
    internal static bool TakesScaledTile(int n, bool halvesFinite, ReadOnlySpan<float> x) =>
        halvesFinite && (n <= FloatActivationTiles.InPlaceRows || !Vector512.IsHardwareAccelerated) && CanScale(x);

    internal static float Dot512(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) => HalfRows.Dot512<ExactHalves>(w, x, cols);

    internal static float Dot256(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) => HalfRows.Dot256<ExactHalves>(w, x, cols);

    /// <summary>
    /// One weight row against two activation rows, each result bit for bit its own <see cref="Dot"/>
    /// (the same lanes and order), each weight converted once for both. Two rows had gone one dot
    /// after the other (MatMulBench, 4096 x 4096 out of cache, one thread: 4.6-4.9 GB/s, now 5.8-6.6;
    /// one row 9.3-11.1): F16 to float is done by bit moves, as .NET 10 has no F16C, so the dot is
    /// bound by the conversion. BF16's one-shift conversion gained nothing from the same change.
    /// </summary>
    public static void Dot2(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x0, ReadOnlySpan<byte> x1, int cols, out float y0, out float y1)
    {
        if (Vector512.IsHardwareAccelerated) HalfRows.Dot2_512<ExactHalves>(w, x0, x1, cols, out y0, out y1);
        else if (Vector256.IsHardwareAccelerated) HalfRows.Dot2_256<ExactHalves>(w, x0, x1, cols, out y0, out y1);
        else
        {
            y0 = Dot(w, x0, cols);
            y1 = Dot(w, x1, cols);
        }
    }
}
