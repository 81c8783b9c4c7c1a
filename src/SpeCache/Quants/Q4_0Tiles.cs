using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q4_0 weights against Q8_0 activations, two blocks at a time. Two blocks' 16 bytes of nibbles go
/// side by side into one 256-bit register; a mask takes values 0-15 of both, a shift values 16-31,
/// and the packed activations hold each pair of blocks in that order. Stored nibbles are q + 8
/// (0..15), so AVX2's u8 × s8 pair sums cannot saturate (at most 2·15·127) and the two halves' pair
/// sums add as words (at most 4·15·127) before one word multiply-add by ones into eight exact
/// 32-bit lanes, four per block (lane l of a block: values 4l..4l+3 and 16+4l..16+4l+3); adding the
/// activation row's plane of −8 × those values' sums takes the offset off again. Then one
/// conversion and one float multiply-add by the blocks' scale products per pair, where
/// <see cref="Q8_0Tiles{TW}"/> spends on each block the weights' signs on the activations, two
/// multiply instructions, a conversion and a multiply-add, and unpacks each block's nibbles alone.
/// The tile keeps a 4 × 4 block of 256-bit accumulators and eight registers of nibbles, which
/// needs AVX-512's 32 vector registers; with AVX2's 16 it takes the tile's weight rows in turn
/// (<see cref="RowsInTurn{TM, TN}"/>). On a Zen 4 VM (MatMulBench, against
/// <see cref="Q8_0Tiles{TW}"/>, alternated twice): one-row decode of a 4096 × 4096 matrix out of
/// cache 12.4-12.5 -> 16.7-17.1 GB/s on one thread and 22.6-23.4 -> 29.8-30.8 on two; an
/// 8192 × 2048 product with 512 rows 165 -> 237-251 GOPS on two. On an AVX2-only Zen 3: figures
/// in <c>bench/Bench/RESULTS.md</c>.
/// </summary>
internal sealed unsafe class Q4_0Tiles : TileKernel
{
    public static readonly Q4_0Tiles Instance = new();

    public static readonly bool Supported = IsSupported;

    /// <summary>
    /// Where the format takes this kernel: not with AVX-VNNI, where <see cref="Q8_0Tiles{TW}"/>
    /// makes a block's lane sums in one instruction, fewer than this kernel's per-pair work (not
    /// measured: no CPU here has AVX-VNNI).
    /// </summary>
    public static readonly bool Preferred = Supported && !AvxVnni.IsSupported;

    /// <summary>A packed pair of blocks: 64 quants, 8 corrections at <see cref="CorrectionsAt"/>, 8 scales at <see cref="ScalesAt"/>.</summary>
    const int PairBytes = 128;
    const int CorrectionsAt = 64;
    const int ScalesAt = 96;

    /// <summary>Bytes per weight block in the tile's table: a pair's eight lanes of weight scales (32 bytes) per block, enough for a last half-empty pair.</summary>
    const int TableBlockBytes = 32;

    static int Pairs(int nb) => (nb + 1) / 2;

    public override int PackedRowBytes(int cols) => CacheLines((long)Pairs(cols / Q4_0.BlockSize) * PairBytes);

    /// <summary>
    /// A packed row: per pair of blocks, 128 bytes: its 64 quants (<see cref="QuantAt"/>), each
    /// lane's −8 × the sum of its eight activations (8 ints), each lane's block scale (8 floats).
    /// A last block without a partner pairs with zeros.
    /// </summary>
    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed)
    {
        int nb = x.Length / Q4_0.BlockSize, pairs = Pairs(nb);
        if (packed.Length < pairs * PairBytes) throw new ArgumentException("packed row too short");
        packed[..(pairs * PairBytes)].Clear();
        sbyte* q = stackalloc sbyte[32];
        fixed (float* xs = x)
        fixed (byte* p = packed)
        {
            for (int b = 0; b < nb; b++)
            {
                float d = QuantMath.ToFloat(Q8_0.QuantizeBlock256(xs + b * 32, q));
                for (int v = 0; v < 32; v++) ((sbyte*)p)[QuantAt(b, v)] = q[v];
                byte* pair = p + b / 2 * PairBytes;
                int lane0 = 4 * (b & 1);
                for (int l = 0; l < 4; l++)
                {
                    int sum = 0;
                    for (int k = 4 * l; k < 4 * l + 4; k++) sum += q[k] + q[16 + k];
                    ((int*)(pair + CorrectionsAt))[lane0 + l] = -8 * sum;
                    ((float*)(pair + ScalesAt))[lane0 + l] = d;
                }
            }
        }
    }

    /// <summary>Where value <paramref name="v"/> of block <paramref name="b"/> sits among a packed row's quants.</summary>
    internal static int QuantAt(int b, int v) => PairBytes * (b / 2) + 32 * (v / 16) + 16 * (b & 1) + v % 16;

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols)
    {
        int nb = cols / Q4_0.BlockSize;
        var x = new float[cols];
        fixed (byte* p = packed)
            for (int b = 0; b < nb; b++)
                for (int v = 0; v < 32; v++)
                    x[b * 32 + v] = BlockScale(p, b) * ((sbyte*)p)[QuantAt(b, v)];
        return x;
    }

    /// <summary>Block <paramref name="b"/>'s activation scale in the packed row at <paramref name="p"/>.</summary>
    static float BlockScale(byte* p, int b) => ((float*)(p + b / 2 * PairBytes + ScalesAt))[4 * (b & 1)];

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        int nb = cols / Q4_0.BlockSize;
        // Up to four activation rows (decode, the two-row speculative decode, small batches) go one
        // weight row at a time, a single stream, each pair's nibbles unpacked once for all of them.
        if (!RowByRow<Kernel>(n, w, weightRowBytes, rows, nb, a, packedRowBytes, y, yStride))
            TiledWithTable<Kernel>(w, weightRowBytes, rows, nb, TableBlockBytes, a, packedRowBytes, n, y, yStride);
    }

    struct Kernel : ITileBody, IWeightTable, IRowByRow
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            Q4_0Tiles.Tile<TM, TN>(w, ws, (float*)table, nb, a, aStride, y, yStride);

        /// <summary>One weight row's table: each pair's weight scales as its eight lanes take them.</summary>
        public static void Unpack(byte* row, byte* table, int nb)
        {
            float* scales = (float*)table;
            for (int p = 0; p < Pairs(nb); p++)
                WeightScales(row + (long)(2 * p) * Q4_0.BlockBytes, 2 * p + 1 < nb).Store(scales + 8 * p);
        }

        public static void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent =>
            Direct<TN>(w, ws, rows, nb, a, aStride, y, yStride);
    }

    /// <summary>The two blocks' half scales as floats, each over its four lanes (the second 0 when <paramref name="both"/> is false).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> WeightScales(byte* first, bool both) =>
        Vector256.Create(Vector128.Create(QuantMath.ToFloat(*(ushort*)first)), Vector128.Create(both ? QuantMath.ToFloat(*(ushort*)(first + Q4_0.BlockBytes)) : 0f));

    /// <summary>The nibbles of the pair starting at <paramref name="first"/>: values 0-15 of both blocks, then 16-31 (the second block's zeros when <paramref name="both"/> is false).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Nibbles(byte* first, bool both, out Vector256<byte> low, out Vector256<byte> high)
    {
        var v = Vector256.Create(Vector128.Load(first + 2), both ? Vector128.Load(first + Q4_0.BlockBytes + 2) : Vector128<byte>.Zero);
        var mask = Vector256.Create((byte)0x0F);
        low = v & mask;
        high = Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & mask;
    }

    /// <summary>
    /// A packed pair of activation blocks (at <paramref name="x"/>) against a pair of weight blocks'
    /// nibbles, into the accumulator, <paramref name="weightScales"/> times the pair's activation
    /// scales the lanes' scale products.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Step(Vector256<float> acc, Vector256<byte> low, Vector256<byte> high, byte* x, Vector256<float> weightScales)
    {
        var words = Avx2.MultiplyAddAdjacent(low, Vector256.Load((sbyte*)x)) + Avx2.MultiplyAddAdjacent(high, Vector256.Load((sbyte*)x + 32));
        var sums = Avx2.MultiplyAddAdjacent(words, Vector256<short>.One) + Vector256.Load((int*)(x + CorrectionsAt));
        var scales = weightScales * Vector256.Load((float*)(x + ScalesAt));
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scales, acc);
    }

    /// <summary>
    /// TM weight rows × TN activation rows, accumulator cIJ weight row I against activation row J;
    /// each pair's nibbles unpacked once per weight row for all the activation rows, the weight
    /// scales from the table.
    /// </summary>
    static void Tile<TM, TN>(byte* w, long ws, float* table, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        if (!Avx512F.IsSupported)
        {
            RowsInTurn<TM, TN>(w, ws, table, nb, a, aStride, y, yStride);
            return;
        }
        Vector256<float> c00 = default, c10 = default, c20 = default, c30 = default;
        Vector256<float> c01 = default, c11 = default, c21 = default, c31 = default;
        Vector256<float> c02 = default, c12 = default, c22 = default, c32 = default;
        Vector256<float> c03 = default, c13 = default, c23 = default, c33 = default;
        int pairs = Pairs(nb), full = nb / 2;
        long tableRow = (long)nb * TableBlockBytes / sizeof(float);
        for (int p = 0; p < pairs; p++)
        {
            bool both = p < full;
            byte* wb = w + (long)(2 * p) * Q4_0.BlockBytes;
            Vector256<byte> l0, h0, l1 = default, h1 = default, l2 = default, h2 = default, l3 = default, h3 = default;
            if (both)
            {
                Nibbles(wb, true, out l0, out h0);
                if (TM.Value > 1) Nibbles(wb + ws, true, out l1, out h1);
                if (TM.Value > 2) Nibbles(wb + 2 * ws, true, out l2, out h2);
                if (TM.Value > 3) Nibbles(wb + 3 * ws, true, out l3, out h3);
            }
            else
            {
                Nibbles(wb, false, out l0, out h0);
                if (TM.Value > 1) Nibbles(wb + ws, false, out l1, out h1);
                if (TM.Value > 2) Nibbles(wb + 2 * ws, false, out l2, out h2);
                if (TM.Value > 3) Nibbles(wb + 3 * ws, false, out l3, out h3);
            }
            float* s = table + 8 * p;
            byte* x = a + (long)p * PairBytes;
            Column<TM>(x, s, tableRow, l0, h0, l1, h1, l2, h2, l3, h3, ref c00, ref c10, ref c20, ref c30);
            if (TN.Value > 1) Column<TM>(x + aStride, s, tableRow, l0, h0, l1, h1, l2, h2, l3, h3, ref c01, ref c11, ref c21, ref c31);
            if (TN.Value > 2) Column<TM>(x + 2 * aStride, s, tableRow, l0, h0, l1, h1, l2, h2, l3, h3, ref c02, ref c12, ref c22, ref c32);
            if (TN.Value > 3) Column<TM>(x + 3 * aStride, s, tableRow, l0, h0, l1, h1, l2, h2, l3, h3, ref c03, ref c13, ref c23, ref c33);
        }
        Store<TM>(y, c00, c10, c20, c30);
        if (TN.Value > 1) Store<TM>(y + yStride, c01, c11, c21, c31);
        if (TN.Value > 2) Store<TM>(y + 2 * yStride, c02, c12, c22, c32);
        if (TN.Value > 3) Store<TM>(y + 3 * yStride, c03, c13, c23, c33);
    }

    /// <summary>
    /// <see cref="Tile{TM, TN}"/> with 16 vector registers: each weight row in turn against the
    /// TN activation rows (TN accumulators and one pair's nibbles live at once), the activation
    /// pairs read again per weight row from L1 or L2. The same operations per accumulator, so the
    /// same bits.
    /// </summary>
    static void RowsInTurn<TM, TN>(byte* w, long ws, float* table, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        int pairs = Pairs(nb), full = nb / 2;
        long tableRow = (long)nb * TableBlockBytes / sizeof(float);
        for (int i = 0; i < TM.Value; i++)
        {
            byte* row = w + i * ws;
            float* s = table + i * tableRow;
            Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
            for (int p = 0; p < full; p++)
                DirectPair<TN>(row + (long)(2 * p) * Q4_0.BlockBytes, Vector256.Load(s + 8 * p), a + (long)p * PairBytes, aStride, ref c0, ref c1, ref c2, ref c3);
            if (full < pairs)
                DirectPair<TN>(row + (long)(2 * full) * Q4_0.BlockBytes, Vector256.Load(s + 8 * full), a + (long)full * PairBytes, aStride,
                    ref c0, ref c1, ref c2, ref c3, both: false);
            y[i] = HorizontalSum(c0);
            if (TN.Value > 1) y[yStride + i] = HorizontalSum(c1);
            if (TN.Value > 2) y[2 * yStride + i] = HorizontalSum(c2);
            if (TN.Value > 3) y[3 * yStride + i] = HorizontalSum(c3);
        }
    }

    /// <summary>One activation row's pair (at <paramref name="x"/>) against the tile's (up to) four weight rows' nibbles, their scales <paramref name="tableRow"/> floats apart from <paramref name="s"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Column<TM>(byte* x, float* s, long tableRow,
        Vector256<byte> l0, Vector256<byte> h0, Vector256<byte> l1, Vector256<byte> h1,
        Vector256<byte> l2, Vector256<byte> h2, Vector256<byte> l3, Vector256<byte> h3,
        ref Vector256<float> c0, ref Vector256<float> c1, ref Vector256<float> c2, ref Vector256<float> c3) where TM : struct, ITileExtent
    {
        c0 = Step(c0, l0, h0, x, Vector256.Load(s));
        if (TM.Value > 1) c1 = Step(c1, l1, h1, x, Vector256.Load(s + tableRow));
        if (TM.Value > 2) c2 = Step(c2, l2, h2, x, Vector256.Load(s + 2 * tableRow));
        if (TM.Value > 3) c3 = Step(c3, l3, h3, x, Vector256.Load(s + 3 * tableRow));
    }

    /// <summary>
    /// Each weight row against up to four activation rows, the pairs' nibbles and weight scales made
    /// once for all of them: the same operations per accumulator as <see cref="Tile{TM, TN}"/> (the
    /// table's scales are the same conversions), so a row's result does not depend on the row count.
    /// </summary>
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        int pairs = Pairs(nb), full = nb / 2;
        for (int r = 0; r < rows; r++)
        {
            byte* row = w + r * ws;
            Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
            int p = 0;
            // Four pairs at a time, their eight half scales converted in one vector (the same floats
            // as one by one) and spread over each pair's lanes by a permute: with two scalar
            // conversions per pair one decode thread read 10.1-10.4 GB/s, with this 15.8-16.2.
            for (; p + 4 <= full; p += 4)
            {
                byte* wb = row + (long)(2 * p) * Q4_0.BlockBytes;
                PrefetchAhead(wb, 8 * Q4_0.BlockBytes);
                var d8 = QuantMath.Scales8(wb, Q4_0.BlockBytes);
                DirectPair<TN>(wb, Avx2.PermuteVar8x32(d8, PairLanes(0)), a + (long)p * PairBytes, aStride, ref c0, ref c1, ref c2, ref c3);
                DirectPair<TN>(wb + 2 * Q4_0.BlockBytes, Avx2.PermuteVar8x32(d8, PairLanes(1)), a + (long)(p + 1) * PairBytes, aStride, ref c0, ref c1, ref c2, ref c3);
                DirectPair<TN>(wb + 4 * Q4_0.BlockBytes, Avx2.PermuteVar8x32(d8, PairLanes(2)), a + (long)(p + 2) * PairBytes, aStride, ref c0, ref c1, ref c2, ref c3);
                DirectPair<TN>(wb + 6 * Q4_0.BlockBytes, Avx2.PermuteVar8x32(d8, PairLanes(3)), a + (long)(p + 3) * PairBytes, aStride, ref c0, ref c1, ref c2, ref c3);
            }
            for (; p < full; p++)
            {
                byte* wb = row + (long)(2 * p) * Q4_0.BlockBytes;
                DirectPair<TN>(wb, WeightScales(wb, true), a + (long)p * PairBytes, aStride, ref c0, ref c1, ref c2, ref c3);
            }
            if (full < pairs)
            {
                byte* wb = row + (long)(2 * full) * Q4_0.BlockBytes;
                DirectPair<TN>(wb, WeightScales(wb, false), a + (long)full * PairBytes, aStride, ref c0, ref c1, ref c2, ref c3, both: false);
            }
            y[r] = HorizontalSum(c0);
            if (TN.Value > 1) y[yStride + r] = HorizontalSum(c1);
            if (TN.Value > 2) y[2 * yStride + r] = HorizontalSum(c2);
            if (TN.Value > 3) y[3 * yStride + r] = HorizontalSum(c3);
        }
    }

    /// <summary>
    /// One pair of weight blocks (at <paramref name="wb"/>, its lanes' weight scales given; the
    /// second block absent when <paramref name="both"/> is false) against the pair at
    /// <paramref name="x"/> of up to four activation rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void DirectPair<TN>(byte* wb, Vector256<float> scales, byte* x, int aStride,
        ref Vector256<float> c0, ref Vector256<float> c1, ref Vector256<float> c2, ref Vector256<float> c3, bool both = true) where TN : struct, ITileExtent
    {
        Nibbles(wb, both, out var low, out var high);
        c0 = Step(c0, low, high, x, scales);
        if (TN.Value > 1) c1 = Step(c1, low, high, x + aStride, scales);
        if (TN.Value > 2) c2 = Step(c2, low, high, x + 2 * aStride, scales);
        if (TN.Value > 3) c3 = Step(c3, low, high, x + 3 * aStride, scales);
    }

    /// <summary>
    /// Permute indices that spread blocks 2k and 2k + 1 of eight over a pair's lanes. An inlined
    /// constant, not a static readonly field, which a kernel compiled before the class's static
    /// constructor has run would read through a class-init check every time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> PairLanes(int k) => Vector256.Create(2 * k, 2 * k, 2 * k, 2 * k, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1);

    /// <summary>
    /// Scalar mirror: lane l of pair p is block 2p + l/4's values 4(l%4).. and 16+4(l%4).., the
    /// integer dot of q (nibble − 8) with the quants taken from the quants themselves (so the
    /// packed corrections are checked too), times the float product of the two scales.
    /// </summary>
    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q4_0.BlockSize;
        Span<float> acc = stackalloc float[8];
        acc.Clear();
        fixed (byte* w = weightRow)
        fixed (byte* x = packedRow)
        {
            sbyte* quants = (sbyte*)x;
            for (int b = 0; b < nb; b++)
            {
                byte* wb = w + b * Q4_0.BlockBytes;
                int lane0 = 4 * (b & 1);
                float scale = QuantMath.ToFloat(*(ushort*)wb) * BlockScale(x, b);
                for (int l = 0; l < 4; l++)
                {
                    int sum = 0;
                    foreach (int first in (ReadOnlySpan<int>)[4 * l, 16 + 4 * l])
                        for (int v = first; v < first + 4; v++)
                            sum += Q4_0Weights.Value(wb, v) * quants[QuantAt(b, v)];
                    acc[lane0 + l] = MathF.FusedMultiplyAdd(sum, scale, acc[lane0 + l]);
                }
            }
        }
        return HorizontalSum(acc);
    }
}
