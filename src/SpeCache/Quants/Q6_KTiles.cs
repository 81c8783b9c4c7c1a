using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q6_K weights against Q8_K activations, on 512-bit registers (AVX512-BW), in the register
/// layout of <see cref="Q6_K.DotAvx512"/>: register r (0..3) holds the unsigned 6-bit values
/// 32r..32r+31 of the block's first half and the same run of its second half, whose low and
/// high bits sit at matching offsets. Packed activation blocks store their quants in that order,
/// so each register of activations is one load. Per output and 256-value block: u8×s8 pair sums
/// (at most 2·63·127, no saturation), a word multiply-add by each 16-value group's int8 scale
/// into 16 exact 32-bit lanes, minus 32 × (scale · activation group sums) in the low eight lanes
/// (the -32 offset of every value, applied once per group); then the lanes go to float with one
/// multiply-add by (d × activation scale). Scales are plain bytes in the block, so no table is
/// unpacked: one activation row costs no more set-up than many.
/// </summary>
internal sealed unsafe class Q6_KTiles : TileKernel
{
    public static readonly Q6_KTiles Instance = new();

    public static readonly bool Supported = IsSupported && Avx512BW.IsSupported;

    /// <summary>
    /// Whether matmuls take this kernel rather than <see cref="Q6_KTiles256"/> (tests run both
    /// wherever <see cref="Supported"/>). On a Zen 4 VM (AVX-512 on 256-bit units, no AVX-VNNI) it was
    /// the slower: <c>specache bench --type q6_k --kv full --depths 0 -p 512 -n 32 --threads 2</c>,
    /// alternated twice, prefill 95.0-103.2 tokens/s by the 256-bit tile against 83.0-86.0 by this one,
    /// decode 29.6-31.9 against 26.6-29.6. It stays the choice only on the CPUs it has been chosen on
    /// so far, AVX-512 ones with AVX-VNNI besides. (Q4_K's 512-bit tile was the faster there.)
    /// </summary>
    public static readonly bool Preferred = Supported && AvxVnni.IsSupported;

    /// <summary>
    /// Packed block (this kernel's and <see cref="Q6_KTiles256"/>'s): float d, 16 group sums,
    /// padding to a cache line, 256 reordered quants (each run of 32 values contiguous).
    /// </summary>
    internal const int PackedBlockBytes = 320;
    internal const int GroupSumsAt = 4;
    internal const int QuantsAt = 64;

    public override int PackedRowBytes(int cols) => PackedBytes(cols);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => PackBlocks(x, packed);

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => UnpackBlocks(packed, cols);

    internal static int PackedBytes(int cols) => cols / Q8_K.BlockSize * PackedBlockBytes;

    internal static void PackBlocks(ReadOnlySpan<float> x, Span<byte> packed)
    {
        int nb = x.Length / Q8_K.BlockSize;
        if (packed.Length < nb * PackedBlockBytes) throw new ArgumentException("packed row too short");
        Span<byte> block = stackalloc byte[Q8_K.BlockBytes];
        for (int b = 0; b < nb; b++)
        {
            Q8_K.QuantizeActivationRow(x.Slice(b * Q8_K.BlockSize, Q8_K.BlockSize), block);
            var dst = packed.Slice(b * PackedBlockBytes, PackedBlockBytes);
            block[..4].CopyTo(dst);
            block.Slice(260, 32).CopyTo(dst[4..]);
            dst.Slice(36, QuantsAt - 36).Clear();
            for (int r = 0; r < 4; r++)
            {
                block.Slice(4 + 32 * r, 32).CopyTo(dst.Slice(QuantsAt + 64 * r));
                block.Slice(4 + 128 + 32 * r, 32).CopyTo(dst.Slice(QuantsAt + 64 * r + 32));
            }
        }
    }

    /// <summary>Where value <paramref name="v"/> of a block sits among the packed quants.</summary>
    internal static int Slot(int v) => 64 * (v % 128 / 32) + 32 * (v / 128) + v % 32;

    internal static float[] UnpackBlocks(ReadOnlySpan<byte> packed, int cols)
    {
        var x = new float[cols];
        for (int b = 0; b < cols / Q8_K.BlockSize; b++)
        {
            var block = packed.Slice(b * PackedBlockBytes, PackedBlockBytes);
            float d = BitConverter.ToSingle(block);
            for (int v = 0; v < Q8_K.BlockSize; v++)
                x[b * Q8_K.BlockSize + v] = d * (sbyte)block[QuantsAt + Slot(v)];
        }
        return x;
    }

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        int nb = cols / Q6_K.BlockSize;
        if (n == 1)
        {
            // One activation row: weight rows one after another, a single stream the hardware
            // prefetcher follows as it does the row dot's.
            for (int r = 0; r < rows; r++) y[r] = RowDot(w + r * weightRowBytes, nb, a);
            return;
        }
        for (int r0 = 0; r0 < rows; r0 += 4)
            Tiles<Body>(Math.Min(4, rows - r0), n, w + r0 * weightRowBytes, weightRowBytes, null, nb, a, packedRowBytes, y + r0, yStride);
    }

    struct Body : ITileBody
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            Q6_KTiles.Tile<TM, TN>(w, ws, nb, a, aStride, y, yStride);
    }

    /// <summary>
    /// TM weight rows × TN activation rows. The integer accumulators sIJ (weight row I,
    /// activation row J) live for one block in registers; the float ones, touched once per
    /// block, in a small stack table.
    /// </summary>
    [SkipLocalsInit] // the accumulators are zeroed below
    static void Tile<TM, TN>(byte* w, long ws, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        // [I * 4 + J], on a cache line: each is loaded and stored once per block, and a split
        // line makes the store-to-load forwarding between blocks fail.
        byte* raw = stackalloc byte[16 * 64 + 64];
        var acc = (Vector512<float>*)(((nint)raw + 63) & ~(nint)63);
        for (int k = 0; k < 16; k++) acc[k] = default;
        for (int b = 0; b < nb; b++)
        {
            Vector512<int> s00 = default, s10 = default, s20 = default, s30 = default;
            Vector512<int> s01 = default, s11 = default, s21 = default, s31 = default;
            Vector512<int> s02 = default, s12 = default, s22 = default, s32 = default;
            Vector512<int> s03 = default, s13 = default, s23 = default, s33 = default;
            byte* wb = w + (long)b * Q6_K.BlockBytes;
            byte* x = a + (long)b * PackedBlockBytes + QuantsAt;
            // Up to four rows are read side by side, which the hardware prefetcher follows less
            // well than one (measured: a one-row matmul at a third of the row dot's speed without this).
            Prefetch(wb);
            if (TM.Value > 1) Prefetch(wb + ws);
            if (TM.Value > 2) Prefetch(wb + 2 * ws);
            if (TM.Value > 3) Prefetch(wb + 3 * ws);
            Row<TN>(wb, x, aStride, ref s00, ref s01, ref s02, ref s03);
            if (TM.Value > 1) Row<TN>(wb + ws, x, aStride, ref s10, ref s11, ref s12, ref s13);
            if (TM.Value > 2) Row<TN>(wb + 2 * ws, x, aStride, ref s20, ref s21, ref s22, ref s23);
            if (TM.Value > 3) Row<TN>(wb + 3 * ws, x, aStride, ref s30, ref s31, ref s32, ref s33);
            byte* xb = a + (long)b * PackedBlockBytes;
            Finish<TM>(wb, ws, xb, acc, s00, s10, s20, s30);
            if (TN.Value > 1) Finish<TM>(wb, ws, xb + aStride, acc + 1, s01, s11, s21, s31);
            if (TN.Value > 2) Finish<TM>(wb, ws, xb + 2 * aStride, acc + 2, s02, s12, s22, s32);
            if (TN.Value > 3) Finish<TM>(wb, ws, xb + 3 * aStride, acc + 3, s03, s13, s23, s33);
        }
        for (int j = 0; j < TN.Value; j++)
            for (int i = 0; i < TM.Value; i++)
                y[j * yStride + i] = HorizontalSum(acc[i * 4 + j].GetLower() + acc[i * 4 + j].GetUpper());
    }

    /// <summary>The block after next of a row (210 bytes: at most five cache lines).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Prefetch(byte* wb)
    {
        byte* ahead = wb + 2 * Q6_K.BlockBytes;
        Sse.Prefetch0(ahead);
        Sse.Prefetch0(ahead + 64);
        Sse.Prefetch0(ahead + 128);
        Sse.Prefetch0(ahead + 192);
        Sse.Prefetch0(ahead + Q6_K.BlockBytes - 1);
    }

    /// <summary>
    /// One weight row against one activation row, the accumulator in a register: exactly the
    /// operations of <see cref="Tile{TM, TN}"/> for one output, so the bits agree.
    /// </summary>
    static float RowDot(byte* w, int nb, byte* a)
    {
        var acc = Vector512<float>.Zero;
        for (int b = 0; b < nb; b++)
        {
            byte* wb = w + (long)b * Q6_K.BlockBytes;
            byte* xb = a + (long)b * PackedBlockBytes;
            Vector512<int> s = default, unused1 = default, unused2 = default, unused3 = default;
            Row<Extent1>(wb, xb + QuantsAt, 0, ref s, ref unused1, ref unused2, ref unused3);
            acc = Step(acc, wb, xb, s);
        }
        return HorizontalSum(acc.GetLower() + acc.GetUpper());
    }

    /// <summary>A block's integer lanes for one output into its float accumulator: the -32 offset, then (d × activation scale).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Step(Vector512<float> acc, byte* wb, byte* xb, Vector512<int> s)
    {
        var offset = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(xb + GroupSumsAt)), Avx2.ConvertToVector256Int16(Vector128.Load((sbyte*)(wb + 192))));
        s -= (offset << 5).ToVector512(); // the upper eight lanes get zero
        return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(s), Vector512.Create(QuantMath.ToFloat(*(ushort*)(wb + 208)) * *(float*)xb), acc);
    }

    /// <summary>One weight block's four registers of 6-bit values and their scales, against TN activation blocks at <paramref name="x"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Row<TN>(byte* wb, byte* x, int aStride, ref Vector512<int> s0, ref Vector512<int> s1, ref Vector512<int> s2, ref Vector512<int> s3)
        where TN : struct, ITileExtent
    {
        var scales = Avx512BW.ConvertToVector512Int16(Vector128.Load((sbyte*)(wb + 192)).ToVector256());
        Q6_K.SixBitValues(wb, out var q1, out var q2, out var q3, out var q4);
        Register<TN>(q1, Avx512BW.PermuteVar32x16(scales, Q6_K.Quarter0), x, aStride, ref s0, ref s1, ref s2, ref s3);
        Register<TN>(q2, Avx512BW.PermuteVar32x16(scales, Q6_K.Quarter1), x + 64, aStride, ref s0, ref s1, ref s2, ref s3);
        Register<TN>(q3, Avx512BW.PermuteVar32x16(scales, Q6_K.Quarter2), x + 128, aStride, ref s0, ref s1, ref s2, ref s3);
        Register<TN>(q4, Avx512BW.PermuteVar32x16(scales, Q6_K.Quarter3), x + 192, aStride, ref s0, ref s1, ref s2, ref s3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Register<TN>(Vector512<byte> q, Vector512<short> c, byte* x, int aStride,
        ref Vector512<int> s0, ref Vector512<int> s1, ref Vector512<int> s2, ref Vector512<int> s3) where TN : struct, ITileExtent
    {
        s0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, Vector512.Load((sbyte*)x)), c);
        if (TN.Value > 1) s1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, Vector512.Load((sbyte*)(x + aStride))), c);
        if (TN.Value > 2) s2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, Vector512.Load((sbyte*)(x + 2 * aStride))), c);
        if (TN.Value > 3) s3 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, Vector512.Load((sbyte*)(x + 3 * aStride))), c);
    }

    /// <summary>End of a block for one activation row (its packed block at <paramref name="x"/>) and the tile's weight rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish<TM>(byte* wb, long ws, byte* x, Vector512<float>* acc,
        Vector512<int> s0, Vector512<int> s1, Vector512<int> s2, Vector512<int> s3) where TM : struct, ITileExtent
    {
        acc[0] = Step(acc[0], wb, x, s0);
        if (TM.Value > 1) acc[4] = Step(acc[4], wb + ws, x, s1);
        if (TM.Value > 2) acc[8] = Step(acc[8], wb + 2 * ws, x, s2);
        if (TM.Value > 3) acc[12] = Step(acc[12], wb + 3 * ws, x, s3);
    }

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q6_K.BlockSize;
        Span<float> acc = stackalloc float[16];
        acc.Clear();
        fixed (byte* w = weightRow)
        fixed (byte* x = packedRow)
            for (int b = 0; b < nb; b++)
            {
                byte* wb = w + b * Q6_K.BlockBytes;
                byte* xb = x + b * PackedBlockBytes;
                float d = QuantMath.ToFloat(*(ushort*)(wb + 208)) * *(float*)xb;
                short* groups = (short*)(xb + GroupSumsAt);
                sbyte* scales = (sbyte*)(wb + 192);
                sbyte* q8 = (sbyte*)(xb + QuantsAt);
                for (int lane = 0; lane < 16; lane++)
                {
                    // Lane l of register r covers values 32r + 4l.. (l < 8) or 128 + 32r + 4(l - 8)...
                    int sum = 0;
                    for (int r = 0; r < 4; r++)
                        for (int k = 0; k < 4; k++)
                        {
                            int v = (lane < 8 ? 0 : 128) + 32 * r + 4 * (lane % 8) + k;
                            sum += scales[v / 16] * Unsigned(wb, v) * q8[Slot(v)];
                        }
                    if (lane < 8) sum -= 32 * (groups[2 * lane] * scales[2 * lane] + groups[2 * lane + 1] * scales[2 * lane + 1]);
                    acc[lane] = MathF.FusedMultiplyAdd(sum, d, acc[lane]);
                }
            }
        Span<float> folded = stackalloc float[8];
        for (int l = 0; l < 8; l++) folded[l] = acc[l] + acc[l + 8];
        return HorizontalSum(folded);
    }

    /// <summary>Value <paramref name="v"/> of the block as stored, 0..63 (the -32 not applied), as <see cref="Q6_K.DequantizeRow"/> reads it.</summary>
    internal static int Unsigned(byte* wb, int v)
    {
        int h = v / 128, l = v % 32, quarter = v % 128 / 32;
        byte* ql = wb + 64 * h;
        byte qh = wb[128 + 32 * h + l];
        return quarter switch
        {
            0 => (ql[l] & 0xF) | ((qh & 3) << 4),
            1 => (ql[l + 32] & 0xF) | (((qh >> 2) & 3) << 4),
            2 => (ql[l] >> 4) | (((qh >> 4) & 3) << 4),
            _ => (ql[l + 32] >> 4) | (((qh >> 6) & 3) << 4),
        };
    }
}
