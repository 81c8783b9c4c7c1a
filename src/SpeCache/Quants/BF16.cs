using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SpeCache.Quants;

/// <summary>bfloat16 weights (the top 16 bits of a float); dotted with float activations.</summary>
public static unsafe class BF16
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>ggml's <c>ggml_compute_fp32_to_bf16</c>: round to nearest even; NaNs made quiet.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float x)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        if ((u & 0x7fffffff) > 0x7f800000) return (ushort)((u >> 16) | 64);
        return (ushort)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
    }

    public static void DequantizeRow(ReadOnlySpan<byte> source, Span<float> destination)
    {
        var raw = MemoryMarshal.Cast<byte, ushort>(source)[..destination.Length];
        var dst = MemoryMarshal.Cast<float, uint>(destination);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= raw.Length; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(raw.Slice(i, 16)));
                (lo << 16).CopyTo(dst.Slice(i, 8));
                (hi << 16).CopyTo(dst.Slice(i + 8, 8));
            }
        for (; i < raw.Length; i++) destination[i] = ToFloat(raw[i]);
    }

    public static void QuantizeRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        var src = MemoryMarshal.Cast<float, uint>(source);
        var dst = MemoryMarshal.Cast<byte, ushort>(destination)[..source.Length];
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= src.Length; i += 16)
            {
                var a = Round(Vector256.Create(src.Slice(i, 8)));
                var b = Round(Vector256.Create(src.Slice(i + 8, 8)));
                Vector256.Narrow(a, b).CopyTo(dst.Slice(i, 16));
            }
        for (; i < src.Length; i++) dst[i] = FromFloat(source[i]);

        static Vector256<uint> Round(Vector256<uint> u)
        {
            var nan = Vector256.GreaterThan(u & Vector256.Create(0x7fffffffu), Vector256.Create(0x7f800000u));
            var rounded = (u + Vector256.Create(0x7fffu) + ((u >> 16) & Vector256<uint>.One)) >> 16;
            return Vector256.ConditionalSelect(nan, (u >> 16) | Vector256.Create(64u), rounded);
        }
    }

    /// <summary>Dot of a BF16 weight row with a float activation row (given as its bytes).</summary>
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
        for (int i = start; i < cols; i++) sum += ToFloat(h[i]) * f[i];
        return sum;
    }

    internal static float Dot512(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) => HalfRows.Dot512<BFloat16s>(w, x, cols);

    internal static float Dot256(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) => HalfRows.Dot256<BFloat16s>(w, x, cols);

    /// <summary>
    /// One weight row against two activation rows, each result bit for bit its own <see cref="Dot"/>
    /// (the same lanes and order): each weight is widened once for both (prefill and the two-row
    /// speculative decode read every weight once per pair of rows instead of once per row).
    /// </summary>
    public static void Dot2(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x0, ReadOnlySpan<byte> x1, int cols, out float y0, out float y1)
    {
        if (Vector512.IsHardwareAccelerated || !Vector256.IsHardwareAccelerated)
        {
            y0 = Dot(w, x0, cols);
            y1 = Dot(w, x1, cols);
            return;
        }
        HalfRows.Dot2_256<BFloat16s>(w, x0, x1, cols, out y0, out y1);
    }
}
