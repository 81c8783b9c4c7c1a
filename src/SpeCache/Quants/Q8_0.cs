using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>ggml's <c>block_q8_0</c>: 32 values as a half-precision scale and 32 signed bytes.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ8_0
{
    public ushort D;            // scale, IEEE half bits
    public fixed sbyte Qs[32];  // value = D * Qs[i]
}

/// <summary>
/// Q8_0: both a weight format and the activation format that Q8_0 and Q4_0 weights are dotted
/// with (ggml's <c>vec_dot_type</c> for both).
/// </summary>
public static unsafe class Q8_0
{
    public const int BlockSize = 32;
    public const int BlockBytes = 34;

    public static void DequantizeRow(ReadOnlySpan<byte> source, Span<float> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ8_0>(source[..(destination.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            float d = QuantMath.ToFloat(blocks[b].D);
            var y = destination.Slice(b * BlockSize, BlockSize);
            fixed (sbyte* q = blocks[b].Qs)
                for (int j = 0; j < BlockSize; j++) y[j] = d * q[j];
        }
    }

    /// <summary>ggml's <c>quantize_row_q8_0_ref</c>: scale amax/127, values rounded half away from zero.</summary>
    public static void QuantizeRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ8_0>(destination[..(source.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            var x = source.Slice(b * BlockSize, BlockSize);
            float amax = 0;
            for (int j = 0; j < BlockSize; j++) amax = MathF.Max(amax, MathF.Abs(x[j]));
            float d = amax / 127;
            float id = d != 0 ? 1.0f / d : 0.0f;
            blocks[b].D = QuantMath.ToHalfBits(d);
            fixed (sbyte* q = blocks[b].Qs)
                for (int j = 0; j < BlockSize; j++) q[j] = (sbyte)QuantMath.RoundAway(x[j] * id);
        }
    }

    /// <summary>
    /// Activation quantization: the same bytes as <see cref="QuantizeRow"/> (tests check it), with
    /// the per-block work on 256-bit vectors because prefill quantizes hundreds of rows per matmul.
    /// </summary>
    public static void QuantizeActivationRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        if (!QuantMath.Simd256)
        {
            QuantizeRow(source, destination);
            return;
        }
        int nb = source.Length / BlockSize;
        fixed (float* xs = source)
        fixed (byte* ys = destination)
        {
            if (destination.Length < nb * BlockBytes) throw new ArgumentException("destination too short");
            for (int b = 0; b < nb; b++)
            {
                byte* y = ys + b * BlockBytes;
                *(ushort*)y = QuantizeBlock256(xs + b * BlockSize, (sbyte*)(y + 2));
            }
        }
    }

    /// <summary>One block of <see cref="QuantizeActivationRow"/> (needs AVX2): writes 32 values, returns the half scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort QuantizeBlock256(float* x, sbyte* q)
    {
        var v0 = Vector256.Load(x);
        var v1 = Vector256.Load(x + 8);
        var v2 = Vector256.Load(x + 16);
        var v3 = Vector256.Load(x + 24);
        var m = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
        float amax = m.GetElement(0);
        for (int k = 1; k < 8; k++) amax = MathF.Max(amax, m.GetElement(k));
        float d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        var vid = Vector256.Create(id);
        var i0 = Vector256.ConvertToInt32(QuantMath.RoundAway(v0 * vid));
        var i1 = Vector256.ConvertToInt32(QuantMath.RoundAway(v1 * vid));
        var i2 = Vector256.ConvertToInt32(QuantMath.RoundAway(v2 * vid));
        var i3 = Vector256.ConvertToInt32(QuantMath.RoundAway(v3 * vid));
        // Narrowing keeps lane order (Vector256.Narrow is order-preserving, unlike packssdw).
        Vector256.Narrow(Vector256.Narrow(i0, i1), Vector256.Narrow(i2, i3)).Store(q);
        return QuantMath.ToHalfBits(d);
    }

    /// <summary>Dot of a Q8_0 weight row with a Q8_0 activation row of <paramref name="cols"/> values.</summary>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) =>
        QuantMath.Simd256 ? DotAvx2(w, x, cols) : Vector128.IsHardwareAccelerated ? Dot128(w, x, cols) : DotScalar(w, x, cols);

    internal static float DotScalar(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        var wb = MemoryMarshal.Cast<byte, BlockQ8_0>(w[..(nb * BlockBytes)]);
        var xb = MemoryMarshal.Cast<byte, BlockQ8_0>(x[..(nb * BlockBytes)]);
        float sum = 0;
        for (int b = 0; b < nb; b++)
        {
            int isum = 0;
            fixed (sbyte* qw = wb[b].Qs)
            fixed (sbyte* qx = xb[b].Qs)
                for (int j = 0; j < BlockSize; j++) isum += qw[j] * qx[j];
            sum += QuantMath.ToFloat(wb[b].D) * QuantMath.ToFloat(xb[b].D) * isum;
        }
        return sum;
    }

    /// <summary>The portable path for CPUs without AVX2 (e.g. NEON): one block per step, four int lanes.</summary>
    internal static float Dot128(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            var acc = Vector128<float>.Zero;
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * BlockBytes;
                var isum = QuantMath.Dot16(Vector128.Load((sbyte*)(wb + 2)), Vector128.Load((sbyte*)(xb + 2)))
                    + QuantMath.Dot16(Vector128.Load((sbyte*)(wb + 18)), Vector128.Load((sbyte*)(xb + 18)));
                float d = QuantMath.ToFloat(*(ushort*)wb) * QuantMath.ToFloat(*(ushort*)xb);
                acc += Vector128.ConvertToSingle(isum) * Vector128.Create(d);
            }
            return Vector128.Sum(acc);
        }
    }

    /// <summary>
    /// One block per step: an exact integer dot of 32 products, then one float multiply-add per
    /// lane; lanes are summed at the end, so only the float summation order differs from scalar.
    /// </summary>
    internal static float DotAvx2(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            int b = 0;
            // Eight blocks per step: their 16 half scales convert as two vectors, and each block's
            // product of scales is broadcast from a lane. Two accumulators halve the FMA chain.
            for (; b + 8 <= nb; b += 8)
            {
                byte* w8 = pw + b * BlockBytes;
                byte* x8 = px + b * BlockBytes;
                var d = QuantMath.Scales8(w8, BlockBytes) * QuantMath.Scales8(x8, BlockBytes);
                for (int k = 0; k < 8; k += 2)
                {
                    acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(IntDot(w8 + k * BlockBytes, x8 + k * BlockBytes)), Avx2.PermuteVar8x32(d, Vector256.Create(k)), acc0);
                    acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(IntDot(w8 + (k + 1) * BlockBytes, x8 + (k + 1) * BlockBytes)), Avx2.PermuteVar8x32(d, Vector256.Create(k + 1)), acc1);
                }
            }
            for (; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * BlockBytes;
                float d = QuantMath.ToFloat(*(ushort*)wb) * QuantMath.ToFloat(*(ushort*)xb);
                acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(IntDot(wb, xb)), Vector256.Create(d), acc0);
            }
            return Vector256.Sum(acc0 + acc1);
        }

        /// <summary>Eight partial sums of one block's 32 products, exact.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector256<int> IntDot(byte* w, byte* x) =>
            QuantMath.SignedDot(Vector256.Load((sbyte*)(w + 2)), Vector256.Load((sbyte*)(x + 2)));
    }
}
