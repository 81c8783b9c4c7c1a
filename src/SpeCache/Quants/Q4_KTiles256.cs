using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q4_K weights against Q8_K activations on 256-bit registers (AVX2 and FMA): the tile for CPUs
/// without the AVX512-BW that <see cref="Q4_KTiles"/> needs (AMD before Zen 4, most Intel
/// desktops and laptops), on <see cref="Q4_KTiles"/>'s packed activations. One register holds a
/// 32-byte chunk c of a block's quants, whose low nibbles are sub-block 2c and high nibbles
/// sub-block 2c + 1. Per output and 256-value block: u8 × s8 pair sums (at most 2·15·127, no
/// saturation), a word multiply-add by the sub-block's 6-bit scale into eight exact 32-bit lanes
/// (lane l sums values 4l..4l+3 of every sub-block), then one float multiply-add by
/// d × activation scale; the mins' term is <see cref="Q4_KTiles"/>'s eight-lane multiply-add.
/// </summary>
internal sealed unsafe class Q4_KTiles256 : TileKernel
{
    public static readonly Q4_KTiles256 Instance = new();

    public static readonly bool Supported = IsSupported;

    /// <summary>Bytes per weight block in the unpacked table: 8 float mins (dmin × min), each sub-block's scale as a word pair, d.</summary>
    const int MetaBytes = 96;
    const int ScalesAt = 32;
    const int DAt = 64;

    const int PackedBlockBytes = Q4_KTiles.PackedBlockBytes;
    const int SumsAt = Q4_KTiles.SumsAt;
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
    /// One weight row's table: dmin × each min and d as floats, and each scale as the pair of
    /// words (sc, sc) that one 32-bit broadcast load spreads over a register's word pairs.
    /// </summary>
    static void UnpackMeta(byte* row, byte* meta, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            byte* block = row + (long)b * Q4_K.BlockBytes;
            byte* mb = meta + b * MetaBytes;
            Q4_K.Unpack(block + 4, out ulong sc, out ulong mins);
            var dd = Q4_KTiles.DAndDMin(block);
            Q4_KTiles.MinFloats(mins, dd).Store((float*)mb);
            var scales = Avx2.ConvertToVector256Int32(Vector128.CreateScalar(sc).AsByte());
            (scales | (scales << 16)).Store((int*)(mb + ScalesAt));
            *(float*)(mb + DAt) = dd.ToScalar();
        }
    }

    /// <summary>
    /// TM weight rows × TN activation rows. AVX2 has 16 registers, too few for the 16 integer
    /// accumulators of a 4 × 4 tile (the JIT spilled 15 of them, a load and a store per
    /// multiply-add), so each weight row of a block is taken in turn against the tile's
    /// activation rows: four accumulators, the row's nibbles split once per chunk, the activation
    /// quants read from L1 as memory operands. The float accumulators, touched once per block,
    /// live in a small stack table.
    /// </summary>
    [SkipLocalsInit] // the accumulators are zeroed below
    static void Tile<TM, TN>(byte* w, long ws, byte* meta, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        var acc = stackalloc Vector256<float>[16]; // [I * 4 + J]
        var minAcc = stackalloc Vector256<float>[16];
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
                Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
                ChunkRows<TN>(wb, TableScale(mb, 0), TableScale(mb, 1), xb, aStride, 0, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, TableScale(mb, 2), TableScale(mb, 3), xb, aStride, 1, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, TableScale(mb, 4), TableScale(mb, 5), xb, aStride, 2, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, TableScale(mb, 6), TableScale(mb, 7), xb, aStride, 3, ref s0, ref s1, ref s2, ref s3);
                var d = Vector256.Create(*(float*)(mb + DAt));
                var mins = Vector256.Load((float*)mb);
                Vector256<float>* ai = acc + 4 * i, mi = minAcc + 4 * i;
                Finish(xb, d, mins, ref ai[0], ref mi[0], s0);
                if (TN.Value > 1) Finish(xb + aStride, d, mins, ref ai[1], ref mi[1], s1);
                if (TN.Value > 2) Finish(xb + 2 * aStride, d, mins, ref ai[2], ref mi[2], s2);
                if (TN.Value > 3) Finish(xb + 3 * aStride, d, mins, ref ai[3], ref mi[3], s3);
            }
        }
        for (int j = 0; j < TN.Value; j++)
            for (int i = 0; i < TM.Value; i++)
                y[j * yStride + i] = HorizontalSum(acc[i * 4 + j]) - HorizontalSum(minAcc[i * 4 + j]);
    }

    /// <summary>Chunk <paramref name="c"/> (a constant at each call) of one weight block against TN activation blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ChunkRows<TN>(byte* wb, Vector256<short> kLo, Vector256<short> kHi, byte* xb, int aStride, int c,
        ref Vector256<int> s0, ref Vector256<int> s1, ref Vector256<int> s2, ref Vector256<int> s3) where TN : struct, ITileExtent
    {
        var v = Vector256.Load(wb + 16 + 32 * c);
        var mask = Vector256.Create((byte)0x0F);
        var lo = v & mask;
        var hi = Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & mask;
        sbyte* x = (sbyte*)(xb + QuantsAt);
        int slotLo = 32 * Q4_KTiles.Slot(2 * c), slotHi = 32 * Q4_KTiles.Slot(2 * c + 1);
        s0 += Scaled(lo, x + slotLo, kLo) + Scaled(hi, x + slotHi, kHi);
        if (TN.Value > 1) s1 += Scaled(lo, x + aStride + slotLo, kLo) + Scaled(hi, x + aStride + slotHi, kHi);
        if (TN.Value > 2) s2 += Scaled(lo, x + 2 * aStride + slotLo, kLo) + Scaled(hi, x + 2 * aStride + slotHi, kHi);
        if (TN.Value > 3) s3 += Scaled(lo, x + 3 * aStride + slotLo, kLo) + Scaled(hi, x + 3 * aStride + slotHi, kHi);
    }

    /// <summary>Sub-block <paramref name="sub"/>'s scale in every word, one broadcast load from the weight row's table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<short> TableScale(byte* mb, int sub) => Vector256.Create(*(int*)(mb + ScalesAt + 4 * sub)).AsInt16();

    /// <summary>One sub-block's nibbles against its 32 activation quants, times its scale: eight exact lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> Scaled(Vector256<byte> nibbles, sbyte* x, Vector256<short> scale) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(nibbles, Vector256.Load(x)), scale);

    /// <summary>End of a block for one (weight row, activation row): scale the integer sums and add the mins.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish(byte* x, Vector256<float> d, Vector256<float> mins, ref Vector256<float> acc, ref Vector256<float> minAcc, Vector256<int> s)
    {
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), d * Vector256.Create(*(float*)x), acc);
        minAcc = Fma.MultiplyAdd(mins, Vector256.Load((float*)(x + SumsAt)), minAcc);
    }

    /// <summary>
    /// Each weight row against up to four activation rows, everything in registers and each block's scales unpacked as it is read: the
    /// unpacked table costs as much to build as a tile's work on one activation row. The same
    /// integer lanes, multiply-adds and reduction as <see cref="Tile{TM, TN}"/>, so the bits agree.
    /// </summary>
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        for (int r = 0; r < rows; r++)
        {
            Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            Vector256<float> min0 = default, min1 = default, min2 = default, min3 = default;
            for (int b = 0; b < nb; b++)
            {
                byte* xb = a + (long)b * PackedBlockBytes;
                byte* wb = w + r * ws + (long)b * Q4_K.BlockBytes;
                PrefetchAhead(wb, Q4_K.BlockBytes);
                Q4_K.Unpack(wb + 4, out ulong sc, out ulong mins);
                // The eight scales as words in both halves; a byte shuffle per sub-block spreads its scale over every word.
                var words = Sse41.ConvertToVector128Int16(Vector128.CreateScalar(sc).AsByte()).AsByte();
                var scales = Vector256.Create(words, words);
                Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
                ChunkRows<TN>(wb, SpreadScale(scales, 0), SpreadScale(scales, 1), xb, aStride, 0, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scales, 2), SpreadScale(scales, 3), xb, aStride, 1, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scales, 4), SpreadScale(scales, 5), xb, aStride, 2, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scales, 6), SpreadScale(scales, 7), xb, aStride, 3, ref s0, ref s1, ref s2, ref s3);
                var dd = Q4_KTiles.DAndDMin(wb);
                var d = Vector256.Create(dd.ToScalar());
                var minFloats = Q4_KTiles.MinFloats(mins, dd);
                Finish(xb, d, minFloats, ref acc0, ref min0, s0);
                if (TN.Value > 1) Finish(xb + aStride, d, minFloats, ref acc1, ref min1, s1);
                if (TN.Value > 2) Finish(xb + 2 * aStride, d, minFloats, ref acc2, ref min2, s2);
                if (TN.Value > 3) Finish(xb + 3 * aStride, d, minFloats, ref acc3, ref min3, s3);
            }
            y[r] = HorizontalSum(acc0) - HorizontalSum(min0);
            if (TN.Value > 1) y[yStride + r] = HorizontalSum(acc1) - HorizontalSum(min1);
            if (TN.Value > 2) y[2 * yStride + r] = HorizontalSum(acc2) - HorizontalSum(min2);
            if (TN.Value > 3) y[3 * yStride + r] = HorizontalSum(acc3) - HorizontalSum(min3);
        }
    }

    /// <summary>Sub-block <paramref name="sub"/>'s scale (a constant at each call) in every word, by a byte shuffle of the eight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<short> SpreadScale(Vector256<byte> scales, int sub) => Avx2.Shuffle(scales, Spread(sub)).AsInt16();

    /// <summary>The byte shuffle that copies word <paramref name="sub"/> into every word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<byte> Spread(int sub) => Vector256.Create((ushort)(((2 * sub + 1) << 8) | (2 * sub))).AsByte();

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q4_K.BlockSize;
        Span<float> acc = stackalloc float[8];
        Span<float> minAcc = stackalloc float[8];
        acc.Clear();
        minAcc.Clear();
        fixed (byte* w = weightRow)
        fixed (byte* x = packedRow)
            for (int b = 0; b < nb; b++)
            {
                byte* wb = w + b * Q4_K.BlockBytes;
                byte* xb = x + b * PackedBlockBytes;
                sbyte* q8 = (sbyte*)(xb + QuantsAt);
                float d = QuantMath.ToFloat(*(ushort*)wb) * *(float*)xb;
                for (int lane = 0; lane < 8; lane++)
                {
                    // Lane l holds values 4l..4l+3 of every sub-block.
                    int sum = 0;
                    for (int sub = 0; sub < 8; sub++) sum += Q4_KTiles.ScaledPart(wb, q8, sub, 4 * lane);
                    acc[lane] = MathF.FusedMultiplyAdd(sum, d, acc[lane]);
                }
                Q4_KTiles.ReferenceMins(wb, xb, minAcc);
            }
        return HorizontalSum(acc) - HorizontalSum(minAcc);
    }
}
