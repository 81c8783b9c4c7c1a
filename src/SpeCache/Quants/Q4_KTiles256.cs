using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q4_K weights against Q8_K activations for CPUs with AVX2 and FMA but not the AVX512-BW that
/// <see cref="Q4_KTiles"/> needs (AMD before Zen 4, most Intel desktops and laptops), on
/// <see cref="Q4_KTiles"/>'s packed activations. It works on 128-bit registers: the first Zen
/// cores run a 256-bit instruction as two 128-bit halves, so what costs is the count of halves,
/// and 16-byte halves let the two halves of a sub-block be added as words before its scale is
/// applied, which a 32-byte register can only do with a lane-crossing shuffle. A 32-byte chunk c
/// of a block's quants holds sub-block 2c in its low nibbles and 2c + 1 in its high ones. Per
/// output, block and sub-block: u8 × s8 pair sums of each 16-value half (at most 2·15·127), the
/// two halves added as words (at most 4·15·127, no saturation), a word multiply-add by the
/// 6-bit scale into four exact 32-bit lanes (lane l sums values 4l..4l+3 and 16+4l..16+4l+3 of
/// every sub-block), then one float multiply-add by d × activation scale. The mins' term is
/// integer too: the eight 6-bit mins against the activation's short sub-block sums by one word
/// multiply-add (lane l: sub-blocks 2l and 2l + 1), then a float multiply-add by dmin ×
/// activation scale. On a first-generation EPYC (MatMulBench, the former 256-bit form against
/// this one in the same minutes) one thread went from 6.7 to 8.4 GB/s of Q4_K weights in decode
/// and two from 60 to 79 GOPS in an 8192 × 2048 prefill product. (The name is the AVX2 tier's,
/// as <see cref="Q6_KTiles256"/>'s, though the registers are now 128-bit.)
/// </summary>
internal sealed unsafe class Q4_KTiles256 : TileKernel
{
    public static readonly Q4_KTiles256 Instance = new();

    public static readonly bool Supported = IsSupported;

    /// <summary>
    /// Bytes per weight block in the unpacked table: each sub-block's scale as a word pair at 0,
    /// the 8 mins as words at 32, d and dmin as floats at 48.
    /// </summary>
    const int MetaBytes = 64;
    const int MinsAt = 32;
    const int DAt = 48;

    const int PackedBlockBytes = Q4_KTiles.PackedBlockBytes;
    const int ShortSumsAt = Q4_KTiles.ShortSumsAt;
    const int QuantsAt = Q4_KTiles.QuantsAt;

    public override int PackedRowBytes(int cols) => Q4_KTiles.PackedBytes(cols);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => Q4_KTiles.PackBlocks(x, packed);

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => Q4_KTiles.UnpackBlocks(packed, cols);

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        int nb = cols / Q4_K.BlockSize;
        // Up to four activation rows (decode, the two-row speculative decode, small batches) skip
        // the table: building it costs about as much as one activation tile's work, so it pays
        // only when several tiles pass over it.
        if (!RowByRow<Kernel>(n, w, weightRowBytes, rows, nb, a, packedRowBytes, y, yStride))
            TiledWithTable<Kernel>(w, weightRowBytes, rows, nb, MetaBytes, a, packedRowBytes, n, y, yStride);
    }

    struct Kernel : ITileBody, IWeightTable, IRowByRow
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            Q4_KTiles256.Tile<TM, TN>(w, ws, table, nb, a, aStride, y, yStride);

        public static void Unpack(byte* row, byte* table, int nb) => UnpackMeta(row, table, nb);

        public static void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent =>
            Direct<TN>(w, ws, rows, nb, a, aStride, y, yStride);
    }

    /// <summary>
    /// One weight row's table: each scale as the pair of words (sc, sc) that one 32-bit broadcast
    /// load spreads over a register's word pairs, the mins as words, d and dmin as floats.
    /// </summary>
    static void UnpackMeta(byte* row, byte* meta, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            byte* block = row + (long)b * Q4_K.BlockBytes;
            byte* mb = meta + b * MetaBytes;
            Q4_K.Unpack(block + 4, out ulong sc, out ulong mins);
            var scales = Avx2.ConvertToVector256Int32(Vector128.CreateScalar(sc).AsByte());
            (scales | (scales << 16)).Store((int*)mb);
            Q4_KTiles.Words(mins).Store((short*)(mb + MinsAt));
            Q4_KTiles.DAndDMin(block).Store((float*)(mb + DAt));
        }
    }

    /// <summary>
    /// TM weight rows × TN activation rows. AVX2 has 16 registers, too few for the 16 integer
    /// accumulators of a 4 × 4 tile (the JIT spilled 15 of them in the 256-bit form, a load and a
    /// store per multiply-add), so each weight row of a block is taken in turn against the tile's
    /// activation rows: four accumulators, the row's nibbles split once per chunk, the activation
    /// quants read from L1 as memory operands. The float accumulators, touched once per block,
    /// live in a small stack table.
    /// </summary>
    [SkipLocalsInit] // the accumulators are zeroed below
    static void Tile<TM, TN>(byte* w, long ws, byte* meta, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        var acc = stackalloc Vector128<float>[16]; // [I * 4 + J]
        var minAcc = stackalloc Vector128<float>[16];
        for (int k = 0; k < 16; k++)
        {
            acc[k] = default;
            minAcc[k] = default;
        }
        long metaRow = (long)nb * MetaBytes;
        for (int b = 0; b < nb; b++)
        {
            byte* xb = a + (long)b * PackedBlockBytes;
            for (int i = 0; i < TM.Value; i++)
            {
                byte* wb = w + i * ws + (long)b * Q4_K.BlockBytes;
                byte* mb = meta + i * metaRow + b * MetaBytes;
                Vector128<int> s0 = default, s1 = default, s2 = default, s3 = default;
                ChunkRows<TN>(wb, TableScale(mb, 0), TableScale(mb, 1), xb, aStride, 0, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, TableScale(mb, 2), TableScale(mb, 3), xb, aStride, 1, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, TableScale(mb, 4), TableScale(mb, 5), xb, aStride, 2, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, TableScale(mb, 6), TableScale(mb, 7), xb, aStride, 3, ref s0, ref s1, ref s2, ref s3);
                var dd = Vector128.Load((float*)(mb + DAt));
                var mins = Vector128.Load((short*)(mb + MinsAt));
                Vector128<float>* ai = acc + 4 * i, mi = minAcc + 4 * i;
                Finish(xb, dd, mins, ref ai[0], ref mi[0], s0);
                if (TN.Value > 1) Finish(xb + aStride, dd, mins, ref ai[1], ref mi[1], s1);
                if (TN.Value > 2) Finish(xb + 2 * aStride, dd, mins, ref ai[2], ref mi[2], s2);
                if (TN.Value > 3) Finish(xb + 3 * aStride, dd, mins, ref ai[3], ref mi[3], s3);
            }
        }
        for (int j = 0; j < TN.Value; j++)
            for (int i = 0; i < TM.Value; i++)
                y[j * yStride + i] = HorizontalSum(acc[i * 4 + j]) - HorizontalSum(minAcc[i * 4 + j]);
    }

    /// <summary>Chunk <paramref name="c"/> (a constant at each call) of one weight block against TN activation blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ChunkRows<TN>(byte* wb, Vector128<short> kLo, Vector128<short> kHi, byte* xb, int aStride, int c,
        ref Vector128<int> s0, ref Vector128<int> s1, ref Vector128<int> s2, ref Vector128<int> s3) where TN : struct, ITileExtent
    {
        byte* q = wb + 16 + 32 * c;
        var v0 = Vector128.Load(q);
        var v1 = Vector128.Load(q + 16);
        var mask = Vector128.Create((byte)0x0F);
        var lo0 = v0 & mask;
        var lo1 = v1 & mask;
        var hi0 = Vector128.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & mask;
        var hi1 = Vector128.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & mask;
        sbyte* x = (sbyte*)(xb + QuantsAt);
        s0 += Scaled(lo0, lo1, x, 2 * c, kLo) + Scaled(hi0, hi1, x, 2 * c + 1, kHi);
        if (TN.Value > 1) s1 += Scaled(lo0, lo1, x + aStride, 2 * c, kLo) + Scaled(hi0, hi1, x + aStride, 2 * c + 1, kHi);
        if (TN.Value > 2) s2 += Scaled(lo0, lo1, x + 2 * aStride, 2 * c, kLo) + Scaled(hi0, hi1, x + 2 * aStride, 2 * c + 1, kHi);
        if (TN.Value > 3) s3 += Scaled(lo0, lo1, x + 3 * aStride, 2 * c, kLo) + Scaled(hi0, hi1, x + 3 * aStride, 2 * c + 1, kHi);
    }

    /// <summary>Sub-block <paramref name="sub"/>'s scale in every word, one broadcast load from the weight row's table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<short> TableScale(byte* mb, int sub) => Vector128.Create(*(int*)(mb + 4 * sub)).AsInt16();

    /// <summary>
    /// Sub-block <paramref name="sub"/>'s two 16-value halves of nibbles against its 32 activation
    /// quants (among the packed ones at <paramref name="x"/>): the halves' pair sums added as
    /// words, then times the scale into four exact lanes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<int> Scaled(Vector128<byte> first, Vector128<byte> second, sbyte* x, int sub, Vector128<short> scale) =>
        Sse2.MultiplyAddAdjacent(
            Ssse3.MultiplyAddAdjacent(first, Vector128.Load(x + Q4_KTiles.QuantAt(sub, 0))) + Ssse3.MultiplyAddAdjacent(second, Vector128.Load(x + Q4_KTiles.QuantAt(sub, 16))),
            scale);

    /// <summary>
    /// End of a block for one (weight row, activation row): the integer sums times d × the
    /// activation scale, and the mins' integer dot times dmin × the activation scale.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish(byte* x, Vector128<float> dAndDMin, Vector128<short> mins, ref Vector128<float> acc, ref Vector128<float> minAcc, Vector128<int> s)
    {
        var scaled = dAndDMin * Vector128.Create(*(float*)x);
        acc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(s), Avx2.BroadcastScalarToVector128(scaled), acc);
        var minDot = Sse2.MultiplyAddAdjacent(mins, Vector128.Load((short*)(x + ShortSumsAt)));
        minAcc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(minDot), Avx.Permute(scaled, 0b01_01_01_01), minAcc);
    }

    /// <summary>
    /// Each weight row against up to four activation rows, everything in registers and each
    /// block's scales unpacked as it is read: the unpacked table costs as much to build as a
    /// tile's work on one activation row. The same integer lanes, multiply-adds and reduction as
    /// <see cref="Tile{TM, TN}"/>, so the bits agree.
    /// </summary>
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        for (int r = 0; r < rows; r++)
        {
            Vector128<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            Vector128<float> min0 = default, min1 = default, min2 = default, min3 = default;
            for (int b = 0; b < nb; b++)
            {
                byte* xb = a + (long)b * PackedBlockBytes;
                byte* wb = w + r * ws + (long)b * Q4_K.BlockBytes;
                PrefetchAhead(wb, Q4_K.BlockBytes);
                Q4_K.Unpack(wb + 4, out ulong sc, out ulong mins);
                // The eight scales as words; a byte shuffle per sub-block spreads its scale over every word.
                var scales = Q4_KTiles.Words(sc).AsByte();
                Vector128<int> s0 = default, s1 = default, s2 = default, s3 = default;
                ChunkRows<TN>(wb, SpreadScale(scales, 0), SpreadScale(scales, 1), xb, aStride, 0, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scales, 2), SpreadScale(scales, 3), xb, aStride, 1, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scales, 4), SpreadScale(scales, 5), xb, aStride, 2, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scales, 6), SpreadScale(scales, 7), xb, aStride, 3, ref s0, ref s1, ref s2, ref s3);
                var dd = Q4_KTiles.DAndDMin(wb);
                var minWords = Q4_KTiles.Words(mins);
                Finish(xb, dd, minWords, ref acc0, ref min0, s0);
                if (TN.Value > 1) Finish(xb + aStride, dd, minWords, ref acc1, ref min1, s1);
                if (TN.Value > 2) Finish(xb + 2 * aStride, dd, minWords, ref acc2, ref min2, s2);
                if (TN.Value > 3) Finish(xb + 3 * aStride, dd, minWords, ref acc3, ref min3, s3);
            }
            y[r] = HorizontalSum(acc0) - HorizontalSum(min0);
            if (TN.Value > 1) y[yStride + r] = HorizontalSum(acc1) - HorizontalSum(min1);
            if (TN.Value > 2) y[2 * yStride + r] = HorizontalSum(acc2) - HorizontalSum(min2);
            if (TN.Value > 3) y[3 * yStride + r] = HorizontalSum(acc3) - HorizontalSum(min3);
        }
    }

    /// <summary>Sub-block <paramref name="sub"/>'s scale (a constant at each call) in every word, by a byte shuffle of the eight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<short> SpreadScale(Vector128<byte> scales, int sub) =>
        Ssse3.Shuffle(scales, Vector128.Create((ushort)(((2 * sub + 1) << 8) | (2 * sub))).AsByte()).AsInt16();

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q4_K.BlockSize;
        Span<float> acc = stackalloc float[4];
        Span<float> minAcc = stackalloc float[4];
        acc.Clear();
        minAcc.Clear();
        fixed (byte* w = weightRow)
        fixed (byte* x = packedRow)
            for (int b = 0; b < nb; b++)
            {
                byte* wb = w + b * Q4_K.BlockBytes;
                byte* xb = x + b * PackedBlockBytes;
                sbyte* q8 = (sbyte*)(xb + QuantsAt);
                float dx = *(float*)xb;
                float d = QuantMath.ToFloat(*(ushort*)wb) * dx, dmin = QuantMath.ToFloat(*(ushort*)(wb + 2)) * dx;
                for (int lane = 0; lane < 4; lane++)
                {
                    // Lane l holds values 4l..4l+3 and 16+4l..16+4l+3 of every sub-block.
                    int sum = 0;
                    for (int sub = 0; sub < 8; sub++)
                        sum += Q4_KTiles.ScaledPart(wb, q8, sub, 4 * lane) + Q4_KTiles.ScaledPart(wb, q8, sub, 16 + 4 * lane);
                    acc[lane] = MathF.FusedMultiplyAdd(sum, d, acc[lane]);
                    // Lane l of the mins: sub-blocks 2l and 2l + 1.
                    int minDot = 0;
                    for (int sub = 2 * lane; sub < 2 * lane + 2; sub++)
                    {
                        Q4_K.ScaleMin(sub, wb + 4, out _, out int m);
                        minDot += m * Q4_KTiles.SubBlockSum(q8, sub);
                    }
                    minAcc[lane] = MathF.FusedMultiplyAdd(minDot, dmin, minAcc[lane]);
                }
            }
        return HorizontalSum(acc) - HorizontalSum(minAcc);
    }
}
