using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// ggml's <c>block_q6_K</c>: 256 values in 16 groups of 16, value = d * scales[g] * (q - 32) with
/// 6-bit q split into low nibbles (Ql) and 2-bit high parts (Qh). Per 128 values (64 Ql bytes,
/// 32 Qh bytes), for l &lt; 32: value l is Ql[l] low | Qh[l] bits 0-1, value l+32 is Ql[l+32] low |
/// bits 2-3, value l+64 is Ql[l] high | bits 4-5, value l+96 is Ql[l+32] high | bits 6-7.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ6_K
{
    public fixed byte Ql[128];      // low 4 bits of each value
    public fixed byte Qh[64];       // high 2 bits of each value
    public fixed sbyte Scales[16];  // 8-bit group scales
    public ushort D;                // super-block scale, half bits
}

/// <summary>Q6_K weights, dotted with Q8_K activations.</summary>
public static unsafe class Q6_K
{
    public const int BlockSize = 256;
    public const int BlockBytes = 210;

    public static void DequantizeRow(ReadOnlySpan<byte> source, Span<float> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ6_K>(source[..(destination.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            var y = destination.Slice(b * BlockSize, BlockSize);
            float d = QuantMath.ToFloat(blocks[b].D);
            fixed (byte* pql = blocks[b].Ql)
            fixed (byte* pqh = blocks[b].Qh)
            fixed (sbyte* psc = blocks[b].Scales)
                for (int h = 0; h < 2; h++)
                {
                    byte* ql = pql + 64 * h;
                    byte* qh = pqh + 32 * h;
                    sbyte* sc = psc + 8 * h;
                    for (int l = 0; l < 32; l++)
                    {
                        int g = l / 16;
                        y[128 * h + l] = d * sc[g] * (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                        y[128 * h + l + 32] = d * sc[g + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                        y[128 * h + l + 64] = d * sc[g + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                        y[128 * h + l + 96] = d * sc[g + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                    }
                }
        }
    }

    /// <summary>
    /// ggml's <c>quantize_row_q6_K_ref</c>: per group of 16, an RMSE-weighted scale search
    /// (<c>make_qx_quants</c>, rmse_type 1); the group scales are then quantized to int8 against
    /// the one of largest magnitude and every value re-rounded against the stored scale.
    /// </summary>
    public static void QuantizeRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ6_K>(destination[..(source.Length / BlockSize * BlockBytes)]);
        Span<sbyte> L = stackalloc sbyte[BlockSize];
        Span<float> scales = stackalloc float[16];
        for (int b = 0; b < blocks.Length; b++)
        {
            var x = source.Slice(b * BlockSize, BlockSize);
            ref var y = ref blocks[b];
            y = default;
            float maxScale = 0, maxAbsScale = 0;
            for (int g = 0; g < 16; g++)
            {
                float scale = MakeQxQuants(32, x.Slice(16 * g, 16), L.Slice(16 * g, 16));
                scales[g] = scale;
                if (MathF.Abs(scale) > maxAbsScale)
                {
                    maxAbsScale = MathF.Abs(scale);
                    maxScale = scale;
                }
            }
            if (maxAbsScale < QuantMath.GroupMaxEps) continue; // all zero, d = 0

            float iscale = -128f / maxScale;
            y.D = QuantMath.ToHalfBits(1 / iscale);
            fixed (sbyte* sc = y.Scales)
            {
                for (int g = 0; g < 16; g++) sc[g] = (sbyte)Math.Min(127, QuantMath.NearestInt(iscale * scales[g]));
                for (int g = 0; g < 16; g++)
                {
                    float d = QuantMath.ToFloat(y.D) * sc[g];
                    if (d == 0) continue;
                    for (int i = 0; i < 16; i++)
                        L[16 * g + i] = (sbyte)(Math.Clamp(QuantMath.NearestInt(x[16 * g + i] / d), -32, 31) + 32);
                }
            }
            fixed (byte* pql = y.Ql)
            fixed (byte* pqh = y.Qh)
                for (int h = 0; h < 2; h++)
                {
                    byte* ql = pql + 64 * h;
                    byte* qh = pqh + 32 * h;
                    int j = 128 * h;
                    for (int l = 0; l < 32; l++)
                    {
                        int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
                        ql[l] = (byte)((q1 & 0xF) | ((q3 & 0xF) << 4));
                        ql[l + 32] = (byte)((q2 & 0xF) | ((q4 & 0xF) << 4));
                        qh[l] = (byte)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
                    }
                }
        }
    }

    /// <summary>
    /// ggml's <c>make_qx_quants</c> with rmse_type 1 and no importance weights: values weighted by
    /// x², scale chosen among nmax + 0.1 * is (is = -9..9) by maximal sumlx² / suml2. L holds
    /// q + nmax. Written in C's evaluation order so results match bit for bit.
    /// </summary>
    internal static float MakeQxQuants(int nmax, ReadOnlySpan<float> x, Span<sbyte> L)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < QuantMath.GroupMaxEps)
        {
            L[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = QuantMath.NearestInt(iscale * x[i]);
            l = Math.Max(-nmax, Math.Min(nmax - 1, l));
            L[i] = (sbyte)(l + nmax);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
        float best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = QuantMath.NearestInt(iscale * x[i]);
                l = Math.Max(-nmax, Math.Min(nmax - 1, l));
                float w = x[i] * x[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                {
                    int l = QuantMath.NearestInt(iscale * x[i]);
                    L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    /// <summary>Dot of a Q6_K weight row with a Q8_K activation row.</summary>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) =>
        Avx512BW.IsSupported && QuantMath.Simd256 ? DotAvx512(w, x, cols) : QuantMath.Simd256 ? DotAvx2(w, x, cols) : DotScalar(w, x, cols);

    internal static float DotScalar(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        var wb = MemoryMarshal.Cast<byte, BlockQ6_K>(w[..(nb * BlockBytes)]);
        var xb = MemoryMarshal.Cast<byte, BlockQ8_K>(x[..(nb * Q8_K.BlockBytes)]);
        float sum = 0;
        Span<int> q = stackalloc int[BlockSize];
        for (int b = 0; b < nb; b++)
        {
            fixed (byte* pql = wb[b].Ql)
            fixed (byte* pqh = wb[b].Qh)
            fixed (sbyte* sc = wb[b].Scales)
            fixed (sbyte* q8 = xb[b].Qs)
            {
                for (int h = 0; h < 2; h++)
                {
                    byte* ql = pql + 64 * h;
                    byte* qh = pqh + 32 * h;
                    for (int l = 0; l < 32; l++)
                    {
                        q[128 * h + l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                        q[128 * h + l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        q[128 * h + l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        q[128 * h + l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    }
                }
                int isum = 0;
                for (int g = 0; g < 16; g++)
                {
                    int s = 0;
                    for (int i = 0; i < 16; i++) s += q[16 * g + i] * q8[16 * g + i];
                    isum += sc[g] * s;
                }
                sum += QuantMath.ToFloat(wb[b].D) * xb[b].D * isum;
            }
        }
        return sum;
    }

    /// <summary>
    /// A block's 256 six-bit values as four registers of unsigned bytes, the low four bits from Ql
    /// and the top two from Qh: register r holds values 32r..32r+31 in its lower half and
    /// 128+32r..128+32r+31 in its upper half (ggml's order, so each lines up with its activations).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SixBitValues(byte* wb, out Vector512<byte> q1, out Vector512<byte> q2, out Vector512<byte> q3, out Vector512<byte> q4)
    {
        var m4 = Vector512.Create((byte)0x0F);
        var m2 = Vector512.Create((byte)0x30);
        var first = Vector512.Load(wb);       // Ql bytes 0-63: [runs 0-31 | 32-63] of values 0-127
        var second = Vector512.Load(wb + 64); // the same for values 128-255
        var ql0 = Avx512F.Shuffle4x128(first.AsUInt64(), second.AsUInt64(), 0x44).AsByte();
        var ql1 = Avx512F.Shuffle4x128(first.AsUInt64(), second.AsUInt64(), 0xEE).AsByte();
        var qh = Vector512.Load(wb + 128);
        q1 = (ql0 & m4) | (Vector512.ShiftLeft(qh.AsUInt16(), 4).AsByte() & m2);
        q2 = (ql1 & m4) | (Vector512.ShiftLeft(qh.AsUInt16(), 2).AsByte() & m2);
        q3 = (Vector512.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & m4) | (qh & m2);
        q4 = (Vector512.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & m4) | (Vector512.ShiftRightLogical(qh.AsUInt16(), 2).AsByte() & m2);
    }

    /// <summary>
    /// Half <paramref name="h"/> (values 128h..128h+127) of a block as four registers of unsigned
    /// 6-bit bytes: register r holds values 128h + 32r..128h + 32r + 31 (the 256-bit form of the
    /// 512-bit overload).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SixBitValues(byte* wb, int h, out Vector256<byte> q1, out Vector256<byte> q2, out Vector256<byte> q3, out Vector256<byte> q4)
    {
        var m4 = Vector256.Create((byte)0x0F);
        var m2 = Vector256.Create((byte)0x30);
        var qh = Vector256.Load(wb + 128 + 32 * h);
        var ql0 = Vector256.Load(wb + 64 * h);
        var ql1 = Vector256.Load(wb + 64 * h + 32);
        q1 = (ql0 & m4) | (Vector256.ShiftLeft(qh.AsUInt16(), 4).AsByte() & m2);
        q2 = (ql1 & m4) | (Vector256.ShiftLeft(qh.AsUInt16(), 2).AsByte() & m2);
        q3 = (Vector256.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & m4) | (qh & m2);
        q4 = (Vector256.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & m4) | (Vector256.ShiftRightLogical(qh.AsUInt16(), 2).AsByte() & m2);
    }

    // Group scale index of each 8-word quarter (16 values) of registers q1..q4. Inlined constants
    // (built from pieces, they were assembled every block; as static readonly fields, a kernel
    // compiled before the static constructor ran reads them through a class-init check).
    internal static Vector512<short> Quarter0
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9);
    }

    internal static Vector512<short> Quarter1
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11);
    }

    internal static Vector512<short> Quarter2
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13);
    }

    internal static Vector512<short> Quarter3
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15);
    }

    /// <summary>
    /// The AVX2 kernel at twice the width: each 512-bit register pairs a 32-value run of the first
    /// 128 values with the matching run of the second 128 (their Qh bytes are adjacent), so the
    /// bit assembly and pair sums run half as often; a word permute gives each 16-value quarter
    /// its group scale.
    /// </summary>
    internal static float DotAvx512(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * Q8_K.BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            var acc = Vector512<float>.Zero;
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * Q8_K.BlockBytes;
                sbyte* q8 = (sbyte*)(xb + 4);
                var sc8 = Vector128.Load((sbyte*)(wb + 192));
                var offset = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(xb + 260)), Avx2.ConvertToVector256Int16(sc8));
                var scales = Avx512BW.ConvertToVector512Int16(sc8.ToVector256());

                SixBitValues(wb, out var q1, out var q2, out var q3, out var q4);
                var isum = Run(q1, q8, Avx512BW.PermuteVar32x16(scales, Quarter0));
                isum += Run(q2, q8 + 32, Avx512BW.PermuteVar32x16(scales, Quarter1));
                isum += Run(q3, q8 + 64, Avx512BW.PermuteVar32x16(scales, Quarter2));
                isum += Run(q4, q8 + 96, Avx512BW.PermuteVar32x16(scales, Quarter3));
                isum -= Vector512.Create(offset << 5, Vector256<int>.Zero);
                float d = QuantMath.ToFloat(*(ushort*)(wb + 208)) * *(float*)xb;
                acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(isum), Vector512.Create(d), acc);
            }
            return Vector512.Sum(acc);
        }

        // 64 unsigned 6-bit values against activations y[0..31] and y[128..159].
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector512<int> Run(Vector512<byte> q, sbyte* y, Vector512<short> scale)
        {
            var ys = Vector512.Create(Vector256.Load(y), Vector256.Load(y + 128));
            return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, ys), scale);
        }
    }

    /// <summary>
    /// Two activation rows against one weight row: the 6-bit assembly and scale permutes are done
    /// once for both. Per row it runs exactly the operations of <see cref="DotAvx512"/> in the
    /// same order, so results are bit-identical to two single dots.
    /// </summary>
    public static void Dot2(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x0, ReadOnlySpan<byte> x1, int cols, out float y0, out float y1)
    {
        if (!(Avx512BW.IsSupported && QuantMath.Simd256))
        {
            y0 = Dot(w, x0, cols);
            y1 = Dot(w, x1, cols);
            return;
        }
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x0.Length < nb * Q8_K.BlockBytes || x1.Length < nb * Q8_K.BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* pa = x0)
        fixed (byte* pb = x1)
        {
            var accA = Vector512<float>.Zero;
            var accB = Vector512<float>.Zero;
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                var sc8 = Vector128.Load((sbyte*)(wb + 192));
                var sc16 = Avx2.ConvertToVector256Int16(sc8);
                var scales = Avx512BW.ConvertToVector512Int16(sc8.ToVector256());
                SixBitValues(wb, out var q1, out var q2, out var q3, out var q4);
                var c1 = Avx512BW.PermuteVar32x16(scales, Quarter0);
                var c2 = Avx512BW.PermuteVar32x16(scales, Quarter1);
                var c3 = Avx512BW.PermuteVar32x16(scales, Quarter2);
                var c4 = Avx512BW.PermuteVar32x16(scales, Quarter3);
                float d = QuantMath.ToFloat(*(ushort*)(wb + 208));
                accA = Row(pa + b * Q8_K.BlockBytes, accA);
                accB = Row(pb + b * Q8_K.BlockBytes, accB);

                Vector512<float> Row(byte* xb, Vector512<float> acc)
                {
                    sbyte* q8 = (sbyte*)(xb + 4);
                    var offset = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(xb + 260)), sc16);
                    var isum = Run(q1, q8, c1);
                    isum += Run(q2, q8 + 32, c2);
                    isum += Run(q3, q8 + 64, c3);
                    isum += Run(q4, q8 + 96, c4);
                    isum -= Vector512.Create(offset << 5, Vector256<int>.Zero);
                    return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(isum), Vector512.Create(d * *(float*)xb), acc);
                }
            }
            y0 = Vector512.Sum(accA);
            y1 = Vector512.Sum(accB);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector512<int> Run(Vector512<byte> q, sbyte* y, Vector512<short> scale)
        {
            var ys = Vector512.Create(Vector256.Load(y), Vector256.Load(y + 128));
            return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, ys), scale);
        }
    }

    /// <summary>
    /// Per 128 values: rebuild the four 32-value registers of unsigned 6-bit q, u8 x s8 pair sums
    /// (at most 2*63*127, no saturation), a 16-bit multiply-add by the two group scales each
    /// register spans. The -32 offset is applied once per block through the activation's group sums.
    /// </summary>
    internal static float DotAvx2(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * Q8_K.BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            var acc = Vector256<float>.Zero;
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * Q8_K.BlockBytes;
                sbyte* sc = (sbyte*)(wb + 192);
                sbyte* q8 = (sbyte*)(xb + 4);
                short* bsums = (short*)(xb + 260);
                // The -32 offset of every value: 32 * sum over groups of scale * activation group sum.
                var offset = Avx2.MultiplyAddAdjacent(Vector256.Load(bsums), Avx2.ConvertToVector256Int16(Vector128.Load(sc)));
                var isum = -(offset << 5);
                for (int h = 0; h < 2; h++)
                {
                    SixBitValues(wb, h, out var q1, out var q2, out var q3, out var q4);
                    sbyte* s = sc + 8 * h;
                    sbyte* y = q8 + 128 * h;
                    isum += Group(q1, y, s[0], s[1]);
                    isum += Group(q2, y + 32, s[2], s[3]);
                    isum += Group(q3, y + 64, s[4], s[5]);
                    isum += Group(q4, y + 96, s[6], s[7]);
                }
                float d = QuantMath.ToFloat(*(ushort*)(wb + 208)) * *(float*)xb;
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(isum), Vector256.Create(d), acc);
            }
            return Vector256.Sum(acc);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector256<int> Group(Vector256<byte> q, sbyte* y, sbyte s0, sbyte s1)
        {
            var pairs = Avx2.MultiplyAddAdjacent(q, Vector256.Load(y));
            // Pair sums 0-7 come from values 0-15 (scale s0), 8-15 from values 16-31 (scale s1).
            var scales = Vector256.Create(Vector128.Create((short)s0), Vector128.Create((short)s1));
            return Avx2.MultiplyAddAdjacent(pairs, scales);
        }
    }
}
