using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SpeCache.Quants;

/// <summary>
/// ggml's <c>block_q8_K</c>: 256 values as a float scale, 256 signed bytes, and the sums of each
/// 16 bytes, which the K-quant dots use to apply their offsets (Q4_K mins, Q6_K's -32) once per
/// group instead of once per value. Used only for activations.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ8_K
{
    public float D;               // scale
    public fixed sbyte Qs[256];   // value = D * Qs[i]
    public fixed short BSums[16]; // BSums[g] = sum of Qs[16g .. 16g + 15]
}

/// <summary>Q8_K: the activation format of Q4_K and Q6_K weights.</summary>
public static unsafe class Q8_K
{
    public const int BlockSize = 256;
    public const int BlockBytes = 292;

    public static void DequantizeRow(ReadOnlySpan<byte> source, Span<float> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ8_K>(source[..(destination.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            var y = destination.Slice(b * BlockSize, BlockSize);
            float d = blocks[b].D;
            fixed (sbyte* q = blocks[b].Qs)
                for (int j = 0; j < BlockSize; j++) y[j] = d * q[j];
        }
    }

    /// <summary>
    /// ggml's <c>quantize_row_q8_K_ref</c>: the value of largest magnitude maps to -127 (ggml keeps
    /// 127 rather than 128 so its AVX kernels can use sign tricks), rounding half to even.
    /// </summary>
    public static void QuantizeRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ8_K>(destination[..(source.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            var x = source.Slice(b * BlockSize, BlockSize);
            ref var y = ref blocks[b];
            float amax = 0, max = 0;
            for (int j = 0; j < BlockSize; j++)
                if (MathF.Abs(x[j]) > amax) { amax = MathF.Abs(x[j]); max = x[j]; }
            if (amax == 0)
            {
                y = default;
                continue;
            }
            float iscale = -127f / max;
            fixed (sbyte* q = y.Qs)
            fixed (short* sums = y.BSums)
            {
                for (int j = 0; j < BlockSize; j++) q[j] = (sbyte)Math.Min(127, QuantMath.NearestInt(iscale * x[j]));
                for (int g = 0; g < 16; g++)
                {
                    int sum = 0;
                    for (int i = 0; i < 16; i++) sum += q[g * 16 + i];
                    sums[g] = (short)sum;
                }
            }
            y.D = 1 / iscale;
        }
    }

    /// <summary>
    /// Activation quantization: the same bytes as <see cref="QuantizeRow"/> (a test checks it), on
    /// 256-bit vectors. The hardware's round-to-nearest-even equals <c>nearest_int</c> here (|v| ≤ 127).
    /// </summary>
    public static void QuantizeActivationRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            QuantizeRow(source, destination);
            return;
        }
        int nb = source.Length / BlockSize;
        if (destination.Length < nb * BlockBytes) throw new ArgumentException("destination too short");
        fixed (float* xs = source)
        fixed (byte* ys = destination)
        {
            for (int b = 0; b < nb; b++)
            {
                float* x = xs + b * BlockSize;
                byte* y = ys + b * BlockBytes;
                var m = Vector256<float>.Zero;
                for (int j = 0; j < BlockSize; j += 8) m = Vector256.Max(m, Vector256.Abs(Vector256.Load(x + j)));
                float amax = m.ToScalar();
                for (int k = 1; k < 8; k++) amax = MathF.Max(amax, m.GetElement(k));
                if (amax == 0)
                {
                    new Span<byte>(y, BlockBytes).Clear();
                    continue;
                }
                // ggml keeps the signed value of the first element of largest magnitude.
                float max = 0;
                for (int j = 0; j < BlockSize; j++)
                    if (MathF.Abs(x[j]) == amax) { max = x[j]; break; }
                float iscale = -127f / max;
                var vs = Vector256.Create(iscale);
                var limit = Vector256.Create(127);
                sbyte* q = (sbyte*)(y + 4);
                short* sums = (short*)(y + 4 + BlockSize);
                for (int j = 0; j < BlockSize; j += 16)
                {
                    var i0 = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j) * vs)), limit);
                    var i1 = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + j + 8) * vs)), limit);
                    var s16 = Vector256.Narrow(i0, i1);
                    Vector128.Narrow(s16.GetLower(), s16.GetUpper()).Store(q + j);
                    sums[j / 16] = (short)Vector256.Sum(i0 + i1);
                }
                *(float*)y = 1 / iscale;
            }
        }
    }
}
