using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// ggml's <c>block_q4_0</c>: 32 values as a half scale and 16 bytes of nibbles. Byte j holds
/// value j in its low nibble and value j + 16 in its high nibble, each stored as q + 8.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ4_0
{
    public ushort D;            // scale, IEEE half bits
    public fixed byte Qs[16];   // value = D * (nibble - 8)
}

/// <summary>Q4_0 weights, dotted with Q8_0 activations.</summary>
public static unsafe class Q4_0
{
    public const int BlockSize = 32;
    public const int BlockBytes = 18;

    public static void DequantizeRow(ReadOnlySpan<byte> source, Span<float> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ4_0>(source[..(destination.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            float d = QuantMath.ToFloat(blocks[b].D);
            var y = destination.Slice(b * BlockSize, BlockSize);
            fixed (byte* q = blocks[b].Qs)
                for (int j = 0; j < 16; j++)
                {
                    y[j] = ((q[j] & 0xF) - 8) * d;
                    y[j + 16] = ((q[j] >> 4) - 8) * d;
                }
        }
    }

    /// <summary>
    /// ggml's <c>quantize_row_q4_0_ref</c>: the value of largest magnitude maps to -8 exactly (so
    /// its sign is kept in the scale), the rest truncate after adding 8.5, i.e. round half up.
    /// </summary>
    public static void QuantizeRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ4_0>(destination[..(source.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            var x = source.Slice(b * BlockSize, BlockSize);
            float amax = 0, max = 0;
            for (int j = 0; j < BlockSize; j++)
                if (amax < MathF.Abs(x[j])) { amax = MathF.Abs(x[j]); max = x[j]; }
            float d = max / -8;
            float id = d != 0 ? 1.0f / d : 0.0f;
            blocks[b].D = QuantMath.ToHalfBits(d);
            fixed (byte* q = blocks[b].Qs)
                for (int j = 0; j < 16; j++)
                {
                    // C converts float to int8_t by truncation, then MIN(15, ...).
                    int lo = Math.Min(15, (int)(sbyte)(int)(x[j] * id + 8.5f));
                    int hi = Math.Min(15, (int)(sbyte)(int)(x[j + 16] * id + 8.5f));
                    q[j] = (byte)(lo | (hi << 4));
                }
        }
    }

    /// <summary>Dot of a Q4_0 weight row with a Q8_0 activation row.</summary>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) =>
        QuantMath.Simd256 ? DotAvx2(w, x, cols) : Vector128.IsHardwareAccelerated ? Dot128(w, x, cols) : DotScalar(w, x, cols);

    internal static float DotScalar(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        var wb = MemoryMarshal.Cast<byte, BlockQ4_0>(w[..(nb * BlockBytes)]);
        var xb = MemoryMarshal.Cast<byte, BlockQ8_0>(x[..(nb * Q8_0.BlockBytes)]);
        float sum = 0;
        for (int b = 0; b < nb; b++)
        {
            int isum = 0;
            fixed (byte* qw = wb[b].Qs)
            fixed (sbyte* qx = xb[b].Qs)
                for (int j = 0; j < 16; j++)
                    isum += ((qw[j] & 0xF) - 8) * qx[j] + ((qw[j] >> 4) - 8) * qx[j + 16];
            sum += QuantMath.ToFloat(wb[b].D) * QuantMath.ToFloat(xb[b].D) * isum;
        }
        return sum;
    }

    /// <summary>The portable path for CPUs without AVX2 (e.g. NEON): one block per step, four int lanes.</summary>
    internal static float Dot128(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * Q8_0.BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            var acc = Vector128<float>.Zero;
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * Q8_0.BlockBytes;
                var packed = Vector128.Load(wb + 2);
                var lo = (packed & Vector128.Create((byte)0x0F)).AsSByte() - Vector128.Create((sbyte)8);
                var hi = Vector128.ShiftRightLogical(packed, 4).AsSByte() - Vector128.Create((sbyte)8);
                var isum = QuantMath.Dot16(lo, Vector128.Load((sbyte*)(xb + 2))) + QuantMath.Dot16(hi, Vector128.Load((sbyte*)(xb + 18)));
                float d = QuantMath.ToFloat(*(ushort*)wb) * QuantMath.ToFloat(*(ushort*)xb);
                acc += Vector128.ConvertToSingle(isum) * Vector128.Create(d);
            }
            return Vector128.Sum(acc);
        }
    }

    internal static float DotAvx2(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * Q8_0.BlockBytes) throw new ArgumentException("row too short");
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
                byte* x8 = px + b * Q8_0.BlockBytes;
                var d = QuantMath.Scales8(w8, BlockBytes) * QuantMath.Scales8(x8, Q8_0.BlockBytes);
                for (int k = 0; k < 8; k += 2)
                {
                    acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(IntDot(w8 + k * BlockBytes, x8 + k * Q8_0.BlockBytes)), Avx2.PermuteVar8x32(d, Vector256.Create(k)), acc0);
                    acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(IntDot(w8 + (k + 1) * BlockBytes, x8 + (k + 1) * Q8_0.BlockBytes)), Avx2.PermuteVar8x32(d, Vector256.Create(k + 1)), acc1);
                }
            }
            for (; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * Q8_0.BlockBytes;
                float d = QuantMath.ToFloat(*(ushort*)wb) * QuantMath.ToFloat(*(ushort*)xb);
                acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(IntDot(wb, xb)), Vector256.Create(d), acc0);
            }
            return Vector256.Sum(acc0 + acc1);
        }

        /// <summary>Eight partial sums of one block's 32 products, exact.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector256<int> IntDot(byte* w, byte* x)
        {
            // Low nibbles are values 0..15 and high nibbles 16..31, so the two halves of one
            // 256-bit register line up with the 32 activation bytes as stored.
            var packed = Vector128.Load(w + 2);
            var nib = Vector256.Create(packed, Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
            var qw = nib.AsSByte() - Vector256.Create((sbyte)8);
            return QuantMath.SignedDot(qw, Vector256.Load((sbyte*)(x + 2)));
        }
    }
}
