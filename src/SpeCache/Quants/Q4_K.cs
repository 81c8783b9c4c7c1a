using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// ggml's <c>block_q4_K</c>: 256 values in 8 sub-blocks of 32, value = d * sc[j] * q - dmin * m[j]
/// with 4-bit q and 6-bit sc/m. The 12 scale bytes pack (sc, m) for j &lt; 4 in the low 6 bits of
/// bytes j and j + 4, and for j &gt;= 4 in the nibbles of byte j + 4 plus the top 2 bits of bytes
/// j - 4 (sc) and j (m). Qs byte l of chunk c (32 bytes per 64 values) holds value 64c + l in its
/// low nibble and 64c + 32 + l in its high nibble.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct BlockQ4_K
{
    public ushort D;              // super-block scale of the sub-block scales, half bits
    public ushort DMin;           // super-block scale of the sub-block mins, half bits
    public fixed byte Scales[12]; // 8 six-bit scales and 8 six-bit mins
    public fixed byte Qs[128];    // 256 nibbles
}

/// <summary>Q4_K weights, dotted with Q8_K activations.</summary>
public static unsafe class Q4_K
{
    public const int BlockSize = 256;
    public const int BlockBytes = 144;

    /// <summary>ggml's <c>get_scale_min_k4</c>: sub-block <paramref name="j"/>'s 6-bit scale and min.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ScaleMin(int j, byte* q, out int sc, out int m)
    {
        if (j < 4)
        {
            sc = q[j] & 63;
            m = q[j + 4] & 63;
        }
        else
        {
            sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    public static void DequantizeRow(ReadOnlySpan<byte> source, Span<float> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ4_K>(source[..(destination.Length / BlockSize * BlockBytes)]);
        for (int b = 0; b < blocks.Length; b++)
        {
            var y = destination.Slice(b * BlockSize, BlockSize);
            float d = QuantMath.ToFloat(blocks[b].D);
            float min = QuantMath.ToFloat(blocks[b].DMin);
            fixed (byte* scales = blocks[b].Scales)
            fixed (byte* qs = blocks[b].Qs)
                for (int c = 0; c < 4; c++)
                {
                    ScaleMin(2 * c, scales, out int sc0, out int m0);
                    ScaleMin(2 * c + 1, scales, out int sc1, out int m1);
                    float d0 = d * sc0, mm0 = min * m0, d1 = d * sc1, mm1 = min * m1;
                    byte* q = qs + 32 * c;
                    for (int l = 0; l < 32; l++) y[64 * c + l] = d0 * (q[l] & 0xF) - mm0;
                    for (int l = 0; l < 32; l++) y[64 * c + 32 + l] = d1 * (q[l] >> 4) - mm1;
                }
        }
    }

    /// <summary>
    /// ggml's <c>quantize_row_q4_K_ref</c>: per sub-block, a weighted least-squares search over 21
    /// candidate scales (<c>make_qkx2_quants</c>), then the scales and mins themselves quantized to
    /// 6 bits against the block's largest, then every value re-rounded against the stored scales.
    /// </summary>
    public static void QuantizeRow(ReadOnlySpan<float> source, Span<byte> destination)
    {
        var blocks = MemoryMarshal.Cast<byte, BlockQ4_K>(destination[..(source.Length / BlockSize * BlockBytes)]);
        Span<byte> L = stackalloc byte[BlockSize];
        Span<byte> laux = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> mins = stackalloc float[8];
        Span<float> scales = stackalloc float[8];
        for (int b = 0; b < blocks.Length; b++)
        {
            var x = source.Slice(b * BlockSize, BlockSize);
            ref var y = ref blocks[b];
            y = default;
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < 8; j++)
            {
                var xj = x.Slice(32 * j, 32);
                float sumX2 = 0;
                for (int l = 0; l < 32; l++) sumX2 += xj[l] * xj[l];
                float avX = MathF.Sqrt(sumX2 / 32);
                for (int l = 0; l < 32; l++) weights[l] = avX + MathF.Abs(xj[l]);
                scales[j] = MakeQkx2Quants(15, xj, weights, L.Slice(32 * j, 32), out mins[j], laux, -1f, 0.1f, 20);
                if (scales[j] > maxScale) maxScale = scales[j];
                if (mins[j] > maxMin) maxMin = mins[j];
            }

            float invScale = maxScale > 0 ? 63f / maxScale : 0f;
            float invMin = maxMin > 0 ? 63f / maxMin : 0f;
            fixed (byte* sc = y.Scales)
            {
                for (int j = 0; j < 8; j++)
                {
                    // C stores nearest_int's int into a uint8_t (wrapping) before MIN(63, ...).
                    byte ls = Math.Min((byte)63, (byte)QuantMath.NearestInt(invScale * scales[j]));
                    byte lm = Math.Min((byte)63, (byte)QuantMath.NearestInt(invMin * mins[j]));
                    if (j < 4)
                    {
                        sc[j] = ls;
                        sc[j + 4] = lm;
                    }
                    else
                    {
                        sc[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                        sc[j - 4] |= (byte)((ls >> 4) << 6);
                        sc[j] |= (byte)((lm >> 4) << 6);
                    }
                }
                y.D = QuantMath.ToHalfBits(maxScale / 63f);
                y.DMin = QuantMath.ToHalfBits(maxMin / 63f);

                for (int j = 0; j < 8; j++)
                {
                    ScaleMin(j, sc, out int s, out int m);
                    float d = QuantMath.ToFloat(y.D) * s;
                    if (d == 0) continue;
                    float dm = QuantMath.ToFloat(y.DMin) * m;
                    for (int i = 0; i < 32; i++)
                        L[32 * j + i] = (byte)Math.Clamp(QuantMath.NearestInt((x[32 * j + i] + dm) / d), 0, 15);
                }
            }
            fixed (byte* q = y.Qs)
                for (int c = 0; c < 4; c++)
                    for (int l = 0; l < 32; l++)
                        q[32 * c + l] = (byte)(L[64 * c + l] | (L[64 * c + l + 32] << 4));
        }
    }

    /// <summary>
    /// ggml's <c>make_qkx2_quants</c> (use_mad = false): fits x ≈ scale * L + min with L in
    /// [0, nmax] and min ≤ 0, trying nstep + 1 scales around nmax / (max - min) and keeping the
    /// one with the least weighted squared error. Returns the scale; <paramref name="theMin"/> is -min.
    /// Arithmetic is written in C's evaluation order so results match bit for bit.
    /// </summary>
    internal static float MakeQkx2Quants(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> L,
        out float theMin, Span<byte> laux, float rmin, float rdelta, int nstep)
    {
        int n = x.Length;
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            L[..n].Clear();
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = QuantMath.NearestInt(iscale * (x[i] - min));
            L[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = scale * L[i] + min - x[i];
            diff = diff * diff;
            bestError += weights[i] * diff;
        }
        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = QuantMath.NearestInt(iscale * (x[i] - min));
                l = Math.Max(0, Math.Min(nmax, l));
                laux[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float D = sumW * sumL2 - sumL * sumL;
            if (D > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / D;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / D;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * laux[i] + thisMin - x[i];
                    diff = diff * diff;
                    curError += weights[i] * diff;
                }
                if (curError < bestError)
                {
                    laux[..n].CopyTo(L);
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    /// <summary>Dot of a Q4_K weight row with a Q8_K activation row.</summary>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) =>
        Avx512BW.IsSupported && QuantMath.Simd256 ? DotAvx512(w, x, cols) : QuantMath.Simd256 ? DotAvx2(w, x, cols) : DotScalar(w, x, cols);

    internal static float DotScalar(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        var wb = MemoryMarshal.Cast<byte, BlockQ4_K>(w[..(nb * BlockBytes)]);
        var xb = MemoryMarshal.Cast<byte, BlockQ8_K>(x[..(nb * Q8_K.BlockBytes)]);
        float sum = 0;
        for (int b = 0; b < nb; b++)
        {
            fixed (byte* scales = wb[b].Scales)
            fixed (byte* qs = wb[b].Qs)
            fixed (sbyte* q8 = xb[b].Qs)
            fixed (short* bsums = xb[b].BSums)
            {
                int isum = 0, msum = 0;
                for (int j = 0; j < 8; j++)
                {
                    ScaleMin(j, scales, out int sc, out int m);
                    int c = j / 2, shift = (j & 1) * 4, s = 0;
                    for (int l = 0; l < 32; l++) s += ((qs[32 * c + l] >> shift) & 0xF) * q8[32 * j + l];
                    isum += sc * s;
                    msum += m * (bsums[2 * j] + bsums[2 * j + 1]);
                }
                float d = QuantMath.ToFloat(wb[b].D) * xb[b].D;
                float dmin = QuantMath.ToFloat(wb[b].DMin) * xb[b].D;
                sum += d * isum - dmin * msum;
            }
        }
        return sum;
    }

    /// <summary>
    /// Per 64 values: split the nibbles into two registers, u8 x s8 pair sums (at most 2*15*127,
    /// no saturation), then a 16-bit multiply-add by the sub-block scale widens to 32 bits.
    /// Mins are applied once per block through the activation's group sums.
    /// </summary>
    internal static float DotAvx2(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * Q8_K.BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            var acc = Vector256<float>.Zero;
            var minAcc = Vector256<float>.Zero;
            var mask = Vector256.Create((byte)0x0F);
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * Q8_K.BlockBytes;
                float yd = *(float*)xb;
                sbyte* q8 = (sbyte*)(xb + 4);
                byte* qs = wb + 16;
                Unpack(wb + 4, out ulong sc, out ulong mins);

                // Mins: sum over sub-blocks of m[j] * (activation sum of sub-block j), from the group sums.
                var pairSums = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(xb + 260)), Vector256<short>.One);
                var m = Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte());
                minAcc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(pairSums * m), Vector256.Create(QuantMath.ToFloat(*(ushort*)(wb + 2)) * yd), minAcc);

                var isum = Vector256<int>.Zero;
                for (int c = 0; c < 4; c++)
                {
                    var q = Vector256.Load(qs + 32 * c);
                    var lo = q & mask;
                    var hi = Vector256.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & mask;
                    var p0 = Avx2.MultiplyAddAdjacent(lo, Vector256.Load(q8 + 64 * c));
                    var p1 = Avx2.MultiplyAddAdjacent(hi, Vector256.Load(q8 + 64 * c + 32));
                    isum += Avx2.MultiplyAddAdjacent(p0, Vector256.Create((short)(byte)(sc >> (16 * c))));
                    isum += Avx2.MultiplyAddAdjacent(p1, Vector256.Create((short)(byte)(sc >> (16 * c + 8))));
                }
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(isum), Vector256.Create(QuantMath.ToFloat(*(ushort*)wb) * yd), acc);
            }
            return Vector256.Sum(acc - minAcc);
        }
    }

    // Sub-block (scale index) of each 16-bit lane, for the word permutes that give every lane its
    // sub-block's scale: the low nibbles of a block's first 64 bytes are sub-blocks 0 (lower 256
    // bits) and 2 (upper), their high nibbles 1 and 3; the next 64 bytes the same for 4-7. Shared by
    // the row dots and the tile kernels. Inlined constants, not static readonly fields: a kernel
    // the JIT compiles before the class's static constructor has run (tiering off, as in the CLI,
    // and the first call a prefill) reads such a field through a class-init check every block,
    // which measured 68 instead of 160 GOPS for the Q4_K tile kernel on one thread.
    internal static Vector512<short> SubBlock0
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2);
    }

    internal static Vector512<short> SubBlock1
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3);
    }

    internal static Vector512<short> SubBlock2
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6);
    }

    internal static Vector512<short> SubBlock3
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7);
    }

    /// <summary>
    /// The AVX2 kernel at twice the width: one 512-bit register holds two 32-byte chunks (128
    /// values), so the nibble split, pair sums and scale multiply-adds run half as often. Each
    /// half of a register belongs to a different sub-block; a word permute of the eight scales
    /// gives every half its own.
    /// </summary>
    internal static float DotAvx512(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        int nb = cols / BlockSize;
        if (w.Length < nb * BlockBytes || x.Length < nb * Q8_K.BlockBytes) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            var acc = Vector512<float>.Zero;
            var minAcc = Vector256<float>.Zero;
            var mask = Vector512.Create((byte)0x0F);
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                byte* xb = px + b * Q8_K.BlockBytes;
                float yd = *(float*)xb;
                sbyte* q8 = (sbyte*)(xb + 4);
                Unpack(wb + 4, out ulong sc, out ulong mins);

                var pairSums = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(xb + 260)), Vector256<short>.One);
                var m = Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte());
                minAcc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(pairSums * m), Vector256.Create(QuantMath.ToFloat(*(ushort*)(wb + 2)) * yd), minAcc);

                var scales = Avx512BW.ConvertToVector512Int16(Vector256.Create(Vector128.CreateScalar(sc).AsByte(), Vector128<byte>.Zero)).AsInt16();
                var q01 = Vector512.Load(wb + 16);
                var q23 = Vector512.Load(wb + 16 + 64);
                var isum = Chunk(q01 & mask, q8, 64, Avx512BW.PermuteVar32x16(scales, SubBlock0));
                isum += Chunk(Vector512.ShiftRightLogical(q01.AsUInt16(), 4).AsByte() & mask, q8 + 32, 64, Avx512BW.PermuteVar32x16(scales, SubBlock1));
                isum += Chunk(q23 & mask, q8 + 128, 64, Avx512BW.PermuteVar32x16(scales, SubBlock2));
                isum += Chunk(Vector512.ShiftRightLogical(q23.AsUInt16(), 4).AsByte() & mask, q8 + 160, 64, Avx512BW.PermuteVar32x16(scales, SubBlock3));
                acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(isum), Vector512.Create(QuantMath.ToFloat(*(ushort*)wb) * yd), acc);
            }
            return Vector512.Sum(acc) - Vector256.Sum(minAcc);
        }

        // 64 nibbles against activations y[0..31] and y[gap..gap+31], scaled per 32-value half.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector512<int> Chunk(Vector512<byte> q, sbyte* y, int gap, Vector512<short> scale)
        {
            var ys = Vector512.Create(Vector256.Load(y), Vector256.Load(y + gap));
            return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, ys), scale);
        }
    }

    /// <summary>
    /// Two activation rows against one weight row (the speculative two-row decode): the nibble
    /// split and scale permutes are done once for both. Per row it runs exactly the operations of
    /// <see cref="DotAvx512"/> in the same order, so results are bit-identical to two single dots.
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
            var minA = Vector256<float>.Zero;
            var minB = Vector256<float>.Zero;
            var mask = Vector512.Create((byte)0x0F);
            for (int b = 0; b < nb; b++)
            {
                byte* wb = pw + b * BlockBytes;
                Unpack(wb + 4, out ulong sc, out ulong mins);
                var m = Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte());
                var scales = Avx512BW.ConvertToVector512Int16(Vector256.Create(Vector128.CreateScalar(sc).AsByte(), Vector128<byte>.Zero)).AsInt16();
                var q01 = Vector512.Load(wb + 16);
                var q23 = Vector512.Load(wb + 16 + 64);
                var n0 = q01 & mask;
                var n1 = Vector512.ShiftRightLogical(q01.AsUInt16(), 4).AsByte() & mask;
                var n2 = q23 & mask;
                var n3 = Vector512.ShiftRightLogical(q23.AsUInt16(), 4).AsByte() & mask;
                var s0 = Avx512BW.PermuteVar32x16(scales, SubBlock0);
                var s1 = Avx512BW.PermuteVar32x16(scales, SubBlock1);
                var s2 = Avx512BW.PermuteVar32x16(scales, SubBlock2);
                var s3 = Avx512BW.PermuteVar32x16(scales, SubBlock3);
                float d = QuantMath.ToFloat(*(ushort*)wb), dmin = QuantMath.ToFloat(*(ushort*)(wb + 2));
                Row(pa + b * Q8_K.BlockBytes, ref accA, ref minA);
                Row(pb + b * Q8_K.BlockBytes, ref accB, ref minB);

                void Row(byte* xb, ref Vector512<float> acc, ref Vector256<float> minAcc)
                {
                    float yd = *(float*)xb;
                    sbyte* q8 = (sbyte*)(xb + 4);
                    var pairSums = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(xb + 260)), Vector256<short>.One);
                    minAcc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(pairSums * m), Vector256.Create(dmin * yd), minAcc);
                    var isum = Chunk(n0, q8, 64, s0);
                    isum += Chunk(n1, q8 + 32, 64, s1);
                    isum += Chunk(n2, q8 + 128, 64, s2);
                    isum += Chunk(n3, q8 + 160, 64, s3);
                    acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(isum), Vector512.Create(d * yd), acc);
                }
            }
            y0 = Vector512.Sum(accA) - Vector256.Sum(minA);
            y1 = Vector512.Sum(accB) - Vector256.Sum(minB);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector512<int> Chunk(Vector512<byte> q, sbyte* y, int gap, Vector512<short> scale)
        {
            var ys = Vector512.Create(Vector256.Load(y), Vector256.Load(y + gap));
            return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, ys), scale);
        }
    }

    /// <summary>
    /// All eight 6-bit scales and mins at once (byte j of each result is sub-block j's), the
    /// bitwise form of <see cref="ScaleMin"/> on the three little-endian words of the 12 bytes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Unpack(byte* scales, out ulong sc, out ulong mins)
    {
        uint u0 = *(uint*)scales, u1 = *(uint*)(scales + 4), u2 = *(uint*)(scales + 8);
        sc = (u0 & 0x3F3F3F3F) | ((ulong)((u2 & 0x0F0F0F0F) | (((u0 >> 6) & 0x03030303) << 4)) << 32);
        mins = (u1 & 0x3F3F3F3F) | ((ulong)(((u2 >> 4) & 0x0F0F0F0F) | (((u1 >> 6) & 0x03030303) << 4)) << 32);
    }
}
