using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q4_K weights against Q8_K activations, on 512-bit registers (AVX512-BW; .NET exposes no
/// 512-bit VNNI). A block's 128 bytes of nibbles are taken as two registers of 16-byte chunks:
/// "first" holds stored bytes 0-15, 32-47, 64-79, 96-111 and "second" bytes 16-31, 48-63,
/// 80-95, 112-127 (one 128-bit lane shuffle each), so that chunk c of either register holds
/// sub-block 2c in its low nibbles and 2c + 1 in its high ones, first and second the two 16-value
/// halves of each. Packed activation blocks store their quants in that order (even sub-blocks'
/// first halves, their second halves, then the odd ones'), so each register is one load. Per
/// output, block and parity: u8 × s8 pair sums of both halves (at most 2·15·127 each), added as
/// words (at most 4·15·127, no saturation), then one word multiply-add by the 6-bit scales into
/// 16 exact 32-bit lanes (lane 4c + l: values 4l..4l+3 and 16+4l..16+4l+3 of sub-blocks 2c and
/// 2c + 1). Adding the halves as words before the scale is what llama.cpp's repacked Q4_K
/// kernels do on CPUs without VNNI: three multiply instructions per 128 products instead of
/// four. The lanes go to float with one multiply-add by (d × activation scale). The mins' term
/// of a block is the dot of eight weight-side floats (dmin × each sub-block's min) with eight
/// activation-side ones (activation scale × each sub-block's sum), the latter made once when
/// the activation row is packed, so it costs one 8-lane multiply-add per output and block. A
/// weight tile's nibbles, scales, min floats and d are unpacked once per tile into a table
/// that the activation tiles passing over it reuse.
/// </summary>
internal sealed unsafe class Q4_KTiles : TileKernel
{
    public static readonly Q4_KTiles Instance = new();

    public static readonly bool Supported = IsSupported && Avx512BW.IsSupported;

    /// <summary>
    /// Bytes per weight block in the unpacked table: the nibbles as bytes in the packed
    /// activations' order at 0 (256), the even and odd sub-blocks' scales as words at
    /// <see cref="ScalesAt"/> (2 × 64), the 8 float mins (dmin × min) at <see cref="MinsAt"/>, d at <see cref="DAt"/>.
    /// </summary>
    const int MetaBytes = 448;
    const int ScalesAt = 256;
    const int MinsAt = 384;
    const int DAt = 416;

    /// <summary>
    /// Packed block (this kernel's and <see cref="Q4_KTiles256"/>'s): float d, padding, the 8
    /// sub-block sums of the quants as shorts at 8 (<see cref="Q4_KTiles256"/>'s integer mins),
    /// padding, the same sums × d as floats at 32 (this kernel's), 256 quants at 64 in the order
    /// the kernel reads them (<see cref="QuantAt"/>).
    /// </summary>
    internal const int PackedBlockBytes = 320;
    internal const int ShortSumsAt = 8;
    internal const int SumsAt = 32;
    internal const int QuantsAt = 64;

    public override int PackedRowBytes(int cols) => PackedBytes(cols);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => PackBlocks(x, packed, QuantOrder.Paired);

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => UnpackBlocks(packed, cols, QuantOrder.Paired);

    internal static int PackedBytes(int cols) => cols / Q8_K.BlockSize * PackedBlockBytes;

    /// <summary>How a packed block orders its 256 quants: the 512-bit kernel's or Q8_K's own.</summary>
    internal enum QuantOrder
    {
        /// <summary>Even sub-blocks' first halves, their second halves, then the odd ones' (<see cref="Q4_KTiles"/>).</summary>
        Paired,

        /// <summary>Sub-block s at 32 s, as Q8_K stores them (<see cref="Q4_KTiles256"/>).</summary>
        Natural,
    }

    internal static void PackBlocks(ReadOnlySpan<float> x, Span<byte> packed, QuantOrder order)
    {
        int nb = x.Length / Q8_K.BlockSize;
        if (packed.Length < nb * PackedBlockBytes) throw new ArgumentException("packed row too short");
        Span<byte> block = stackalloc byte[Q8_K.BlockBytes];
        for (int b = 0; b < nb; b++)
        {
            Q8_K.QuantizeActivationRow(x.Slice(b * Q8_K.BlockSize, Q8_K.BlockSize), block);
            var dst = packed.Slice(b * PackedBlockBytes, PackedBlockBytes);
            block[..4].CopyTo(dst);
            float d = BitConverter.ToSingle(block);
            var groupSums = MemoryMarshal.Cast<byte, short>(block.Slice(260, 32));
            var sums = MemoryMarshal.Cast<byte, float>(dst.Slice(SumsAt, 32));
            var shortSums = MemoryMarshal.Cast<byte, short>(dst.Slice(ShortSumsAt, 16));
            for (int sub = 0; sub < 8; sub++)
            {
                // 32 quants of at most 127 in size: the sum fits a short.
                int sum = groupSums[2 * sub] + groupSums[2 * sub + 1];
                shortSums[sub] = (short)sum;
                sums[sub] = sum * d;
            }
            for (int sub = 0; sub < 8; sub++)
                for (int half = 0; half < 2; half++)
                    block.Slice(4 + 32 * sub + 16 * half, 16).CopyTo(dst.Slice(QuantsAt + QuantAt(sub, 16 * half, order), 16));
        }
    }

    /// <summary>
    /// Where value <paramref name="v"/> of sub-block <paramref name="sub"/> sits among a packed
    /// block's quants. Paired: even sub-blocks before odd ones, first halves before second ones,
    /// then the sub-block pair, then the value within its half. Natural: 32 × sub + v.
    /// </summary>
    internal static int QuantAt(int sub, int v, QuantOrder order) => order == QuantOrder.Natural
        ? 32 * sub + v
        : 128 * (sub & 1) + 64 * (v / 16) + 16 * (sub >> 1) + v % 16;

    internal static float[] UnpackBlocks(ReadOnlySpan<byte> packed, int cols, QuantOrder order)
    {
        var x = new float[cols];
        for (int b = 0; b < cols / Q8_K.BlockSize; b++)
        {
            var block = packed.Slice(b * PackedBlockBytes, PackedBlockBytes);
            float d = BitConverter.ToSingle(block);
            for (int v = 0; v < Q8_K.BlockSize; v++)
                x[b * Q8_K.BlockSize + v] = d * (sbyte)block[QuantsAt + QuantAt(v / 32, v % 32, order)];
        }
        return x;
    }

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        int nb = cols / Q4_K.BlockSize;
        // Up to four activation rows (decode, the two-row speculative decode, small batches) go row
        // by row without the table: building it costs about as much as one activation tile's work.
        // Each weight block is decoded once for all of them, and the matrix streams in one pass, one
        // row after another: four rows side by side (four interleaved 144-byte block streams)
        // measured 26 instead of 37 GB/s on two threads over matrices too big for the cache, as the
        // hardware prefetcher loses them. (When only one row came this way, two rows built the
        // table and read the matrix at a third of one row's speed.)
        if (!RowByRow<Kernel>(n, w, weightRowBytes, rows, nb, a, packedRowBytes, y, yStride))
            TiledWithTable<Kernel>(w, weightRowBytes, rows, nb, MetaBytes, a, packedRowBytes, n, y, yStride);
    }

    struct Kernel : ITileBody, IWeightTable, IRowByRow
    {
        public static void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent =>
            Direct<TN>(w, ws, rows, nb, a, aStride, y, yStride);

        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            Q4_KTiles.Tile<TM, TN>(w, ws, table, nb, a, aStride, y, yStride);

        public static void Unpack(byte* row, byte* table, int nb) => UnpackMeta(row, table, nb);
    }

    /// <summary>One weight row's table: the nibbles as bytes, the scales as words, dmin × each min and d as floats.</summary>
    static void UnpackMeta(byte* row, byte* meta, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            byte* block = row + (long)b * Q4_K.BlockBytes;
            byte* mb = meta + b * MetaBytes;
            var w = Decode(block);
            w.EvenFirst.Store(mb);
            w.EvenSecond.Store(mb + 64);
            w.OddFirst.Store(mb + 128);
            w.OddSecond.Store(mb + 192);
            w.EvenScales.Store((short*)(mb + ScalesAt));
            w.OddScales.Store((short*)(mb + ScalesAt + 64));
            var dd = DAndDMin(block);
            MinFloats(w.Mins, dd).Store((float*)(mb + MinsAt));
            *(float*)(mb + DAt) = dd.ToScalar();
        }
    }

    /// <summary>A block's d and dmin (lanes 0 and 1), in one vector conversion.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> DAndDMin(byte* block) =>
        QuantMath.HalfToSingle(Sse41.ConvertToVector128Int32(Vector128.CreateScalar(*(uint*)block).AsUInt16()).AsUInt32());

    /// <summary>dmin × each sub-block's 6-bit min (byte j of <paramref name="mins"/>), the weight side of the mins' dot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> MinFloats(ulong mins, Vector128<float> dAndDMin) =>
        Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte())) * Vector256.Create(dAndDMin.GetElement(1));

    /// <summary>One weight block decoded: its nibbles in the packed activations' order, the scale words each pair of registers takes, the packed mins.</summary>
    readonly record struct BlockWeights(
        Vector512<byte> EvenFirst, Vector512<byte> EvenSecond, Vector512<byte> OddFirst, Vector512<byte> OddSecond,
        Vector512<short> EvenScales, Vector512<short> OddScales, ulong Mins);

    /// <summary>Splits a Q4_K block (at <paramref name="block"/>) into <see cref="BlockWeights"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static BlockWeights Decode(byte* block)
    {
        var raw0 = Vector512.Load((int*)(block + 16));
        var raw1 = Vector512.Load((int*)(block + 80));
        // 128-bit lanes 0 and 2 of both registers, then lanes 1 and 3: the first and second halves.
        var first = Avx512F.Shuffle4x128(raw0, raw1, 0b10_00_10_00).AsByte();
        var second = Avx512F.Shuffle4x128(raw0, raw1, 0b11_01_11_01).AsByte();
        var mask = Vector512.Create((byte)0x0F);
        Q4_K.Unpack(block + 4, out ulong sc, out ulong mins);
        var scales = Avx512BW.ConvertToVector512Int16(Vector256.Create(Vector128.CreateScalar(sc).AsByte(), Vector128<byte>.Zero)).AsInt16();
        return new BlockWeights(
            first & mask, second & mask,
            Vector512.ShiftRightLogical(first.AsUInt16(), 4).AsByte() & mask,
            Vector512.ShiftRightLogical(second.AsUInt16(), 4).AsByte() & mask,
            Avx512BW.PermuteVar32x16(scales, EvenSubBlocks), Avx512BW.PermuteVar32x16(scales, OddSubBlocks), mins);
    }

    // The sub-block (scale index) of each word of the even and odd registers: 128-bit lane c
    // holds sub-block 2c or 2c + 1. Inlined constants, not static readonly fields: a kernel the
    // JIT compiles before the class's static constructor has run (tiering off, as in the CLI, and
    // the first call a prefill) reads such a field through a class-init check every block.
    static Vector512<short> EvenSubBlocks
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
    }

    static Vector512<short> OddSubBlocks
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.Create((short)1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7);
    }

    /// <summary>
    /// One parity's product: both halves' pair sums added as words, then times the scales into
    /// 16 exact lanes. <paramref name="q"/> points at the parity's 128 packed activation quants.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<int> Scaled(Vector512<byte> first, Vector512<byte> second, sbyte* q, Vector512<short> scales) =>
        Avx512BW.MultiplyAddAdjacent(
            Avx512BW.MultiplyAddAdjacent(first, Vector512.Load(q)) + Avx512BW.MultiplyAddAdjacent(second, Vector512.Load(q + 64)), scales);

    /// <summary>
    /// TM weight rows × TN activation rows. The integer accumulators sIJ (weight row I,
    /// activation row J) live for one block in registers; the float ones, touched once per
    /// block, live in a small stack table. Each parity's nibbles (eight registers for four
    /// weight rows) are loaded from the table once for all activation rows; the scales are
    /// memory operands.
    /// </summary>
    [SkipLocalsInit] // the accumulators are zeroed below; the runtime's zeroing of the stack would be a second pass
    static void Tile<TM, TN>(byte* w, long ws, byte* meta, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        var acc = stackalloc Vector512<float>[16]; // [I * 4 + J]
        var minAcc = stackalloc Vector256<float>[16];
        for (int k = 0; k < 16; k++)
        {
            acc[k] = default;
            minAcc[k] = default;
        }
        long metaRow = (long)nb * MetaBytes;
        for (int b = 0; b < nb; b++)
        {
            Vector512<int> s00 = default, s10 = default, s20 = default, s30 = default;
            Vector512<int> s01 = default, s11 = default, s21 = default, s31 = default;
            Vector512<int> s02 = default, s12 = default, s22 = default, s32 = default;
            Vector512<int> s03 = default, s13 = default, s23 = default, s33 = default;
            byte* mb = meta + b * MetaBytes;
            byte* x = a + (long)b * PackedBlockBytes + QuantsAt;
            for (int parity = 0; parity < 2; parity++)
            {
                byte* nibbles = mb + 128 * parity;
                var f0 = Vector512.Load(nibbles);
                var g0 = Vector512.Load(nibbles + 64);
                var f1 = TM.Value > 1 ? Vector512.Load(nibbles + metaRow) : default;
                var g1 = TM.Value > 1 ? Vector512.Load(nibbles + metaRow + 64) : default;
                var f2 = TM.Value > 2 ? Vector512.Load(nibbles + 2 * metaRow) : default;
                var g2 = TM.Value > 2 ? Vector512.Load(nibbles + 2 * metaRow + 64) : default;
                var f3 = TM.Value > 3 ? Vector512.Load(nibbles + 3 * metaRow) : default;
                var g3 = TM.Value > 3 ? Vector512.Load(nibbles + 3 * metaRow + 64) : default;
                short* k = (short*)(mb + ScalesAt + 64 * parity);
                int offset = 128 * parity;
                Parity<TM>((sbyte*)(x + offset), f0, g0, f1, g1, f2, g2, f3, g3, k, metaRow, ref s00, ref s10, ref s20, ref s30);
                if (TN.Value > 1) Parity<TM>((sbyte*)(x + aStride + offset), f0, g0, f1, g1, f2, g2, f3, g3, k, metaRow, ref s01, ref s11, ref s21, ref s31);
                if (TN.Value > 2) Parity<TM>((sbyte*)(x + 2 * aStride + offset), f0, g0, f1, g1, f2, g2, f3, g3, k, metaRow, ref s02, ref s12, ref s22, ref s32);
                if (TN.Value > 3) Parity<TM>((sbyte*)(x + 3 * aStride + offset), f0, g0, f1, g1, f2, g2, f3, g3, k, metaRow, ref s03, ref s13, ref s23, ref s33);
            }
            byte* xb = a + (long)b * PackedBlockBytes;
            Finish<TM>(xb, mb, metaRow, acc, minAcc, s00, s10, s20, s30);
            if (TN.Value > 1) Finish<TM>(xb + aStride, mb, metaRow, acc + 1, minAcc + 1, s01, s11, s21, s31);
            if (TN.Value > 2) Finish<TM>(xb + 2 * aStride, mb, metaRow, acc + 2, minAcc + 2, s02, s12, s22, s32);
            if (TN.Value > 3) Finish<TM>(xb + 3 * aStride, mb, metaRow, acc + 3, minAcc + 3, s03, s13, s23, s33);
        }
        for (int j = 0; j < TN.Value; j++)
            for (int i = 0; i < TM.Value; i++)
                y[j * yStride + i] = HorizontalSum(acc[i * 4 + j].GetLower() + acc[i * 4 + j].GetUpper()) - HorizontalSum(minAcc[i * 4 + j]);
    }

    /// <summary>One activation row's quants of one parity (at <paramref name="q"/>) against the tile's nibbles of that parity.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Parity<TM>(sbyte* q, Vector512<byte> f0, Vector512<byte> g0, Vector512<byte> f1, Vector512<byte> g1,
        Vector512<byte> f2, Vector512<byte> g2, Vector512<byte> f3, Vector512<byte> g3, short* k, long metaRow,
        ref Vector512<int> s0, ref Vector512<int> s1, ref Vector512<int> s2, ref Vector512<int> s3) where TM : struct, ITileExtent
    {
        s0 += Scaled(f0, g0, q, Vector512.Load(k));
        if (TM.Value > 1) s1 += Scaled(f1, g1, q, Vector512.Load((short*)((byte*)k + metaRow)));
        if (TM.Value > 2) s2 += Scaled(f2, g2, q, Vector512.Load((short*)((byte*)k + 2 * metaRow)));
        if (TM.Value > 3) s3 += Scaled(f3, g3, q, Vector512.Load((short*)((byte*)k + 3 * metaRow)));
    }

    /// <summary>
    /// Each weight row against up to four activation rows, everything in registers and each
    /// weight block decoded as it is read (once for all the activation rows): per output the same
    /// integer lane sums, the same multiply-adds with the same operands, and the same final
    /// reduction as <see cref="Tile{TM, TN}"/>, so the bits agree.
    /// </summary>
    [SkipLocalsInit]
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        for (int r = 0; r < rows; r++)
        {
            byte* row = w + r * ws;
            Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            Vector256<float> min0 = default, min1 = default, min2 = default, min3 = default;
            for (int b = 0; b < nb; b++)
            {
                byte* xb = a + (long)b * PackedBlockBytes;
                byte* wb = row + (long)b * Q4_K.BlockBytes;
                var weights = Decode(wb);
                var dd = DAndDMin(wb);
                float d = dd.ToScalar();
                var minFloats = MinFloats(weights.Mins, dd);
                RowBlock(xb, weights, d, minFloats, ref acc0, ref min0);
                if (TN.Value > 1) RowBlock(xb + aStride, weights, d, minFloats, ref acc1, ref min1);
                if (TN.Value > 2) RowBlock(xb + 2 * aStride, weights, d, minFloats, ref acc2, ref min2);
                if (TN.Value > 3) RowBlock(xb + 3 * aStride, weights, d, minFloats, ref acc3, ref min3);
            }
            y[r] = HorizontalSum(acc0.GetLower() + acc0.GetUpper()) - HorizontalSum(min0);
            if (TN.Value > 1) y[yStride + r] = HorizontalSum(acc1.GetLower() + acc1.GetUpper()) - HorizontalSum(min1);
            if (TN.Value > 2) y[2 * yStride + r] = HorizontalSum(acc2.GetLower() + acc2.GetUpper()) - HorizontalSum(min2);
            if (TN.Value > 3) y[3 * yStride + r] = HorizontalSum(acc3.GetLower() + acc3.GetUpper()) - HorizontalSum(min3);
        }
    }

    /// <summary>One activation row's block (at <paramref name="xb"/>) against a decoded weight block, into that row's accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void RowBlock(byte* xb, in BlockWeights w, float d, Vector256<float> minFloats, ref Vector512<float> acc, ref Vector256<float> minAcc)
    {
        sbyte* q = (sbyte*)(xb + QuantsAt);
        var s = Scaled(w.EvenFirst, w.EvenSecond, q, w.EvenScales) + Scaled(w.OddFirst, w.OddSecond, q + 128, w.OddScales);
        acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(s), Vector512.Create(d * *(float*)xb), acc);
        minAcc = Fma.MultiplyAdd(minFloats, Vector256.Load((float*)(xb + SumsAt)), minAcc);
    }

    /// <summary>End of a block for one activation row (its packed block at <paramref name="x"/>): scale the integer sums and add the mins.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish<TM>(byte* x, byte* meta, long metaRow, Vector512<float>* acc, Vector256<float>* minAcc,
        Vector512<int> s0, Vector512<int> s1, Vector512<int> s2, Vector512<int> s3) where TM : struct, ITileExtent
    {
        float dx = *(float*)x;
        var sums = Vector256.Load((float*)(x + SumsAt));
        Row(acc, minAcc, meta, dx, sums, s0);
        if (TM.Value > 1) Row(acc + 4, minAcc + 4, meta + metaRow, dx, sums, s1);
        if (TM.Value > 2) Row(acc + 8, minAcc + 8, meta + 2 * metaRow, dx, sums, s2);
        if (TM.Value > 3) Row(acc + 12, minAcc + 12, meta + 3 * metaRow, dx, sums, s3);

        static void Row(Vector512<float>* acc, Vector256<float>* minAcc, byte* meta, float dx, Vector256<float> sums, Vector512<int> s)
        {
            *acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(s), Vector512.Create(*(float*)(meta + DAt) * dx), *acc);
            *minAcc = Fma.MultiplyAdd(Vector256.Load((float*)(meta + MinsAt)), sums, *minAcc);
        }
    }

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q4_K.BlockSize;
        Span<float> acc = stackalloc float[16];
        Span<float> minAcc = stackalloc float[8];
        acc.Clear();
        minAcc.Clear();
        fixed (byte* w = weightRow)
        fixed (byte* x = packedRow)
            for (int b = 0; b < nb; b++)
            {
                byte* wb = w + b * Q4_K.BlockBytes;
                byte* xb = x + b * PackedBlockBytes;
                float dx = *(float*)xb;
                sbyte* q8 = (sbyte*)(xb + QuantsAt);
                float d = QuantMath.ToFloat(*(ushort*)wb) * dx;
                for (int lane = 0; lane < 16; lane++)
                {
                    // Lane 4c + l holds values 4l..4l+3 and 16+4l..16+4l+3 of sub-blocks 2c and 2c + 1.
                    int sum = 0;
                    for (int sub = 2 * (lane / 4); sub < 2 * (lane / 4) + 2; sub++)
                        sum += ScaledPart(wb, q8, sub, 4 * (lane % 4), QuantOrder.Paired) + ScaledPart(wb, q8, sub, 16 + 4 * (lane % 4), QuantOrder.Paired);
                    acc[lane] = MathF.FusedMultiplyAdd(sum, d, acc[lane]);
                }
                ReferenceMins(wb, xb, minAcc);
            }
        Span<float> folded = stackalloc float[8];
        for (int l = 0; l < 8; l++) folded[l] = acc[l] + acc[l + 8];
        return HorizontalSum(folded) - HorizontalSum(minAcc);
    }

    /// <summary>Scalar: sub-block <paramref name="sub"/>'s scale × the dot of its values first..first+3 with the activation's (one integer lane's share).</summary>
    internal static int ScaledPart(byte* wb, sbyte* q8, int sub, int first, QuantOrder order)
    {
        Q4_K.ScaleMin(sub, wb + 4, out int sc, out _);
        int part = 0;
        for (int v = first; v < first + 4; v++)
            part += ((wb[16 + 32 * (sub / 2) + v] >> (4 * (sub & 1))) & 0xF) * q8[QuantAt(sub, v, order)];
        return sc * part;
    }

    /// <summary>Scalar: one block's mins term into the eight lanes of <paramref name="minAcc"/>, as the kernels' one multiply-add.</summary>
    internal static void ReferenceMins(byte* wb, byte* xb, Span<float> minAcc)
    {
        float dx = *(float*)xb, dmin = QuantMath.ToFloat(*(ushort*)(wb + 2));
        sbyte* q8 = (sbyte*)(xb + QuantsAt);
        for (int l = 0; l < 8; l++)
        {
            // The activation side from the quants themselves, so the packed sums are checked too.
            Q4_K.ScaleMin(l, wb + 4, out _, out int m);
            minAcc[l] = MathF.FusedMultiplyAdd(m * dmin, SubBlockSum(q8, l, QuantOrder.Paired) * dx, minAcc[l]);
        }
    }

    /// <summary>Scalar: the sum of sub-block <paramref name="sub"/>'s 32 packed activation quants, taken from the quants themselves so the packed sums are checked too.</summary>
    internal static int SubBlockSum(sbyte* q8, int sub, QuantOrder order)
    {
        int sum = 0;
        for (int v = 0; v < 32; v++) sum += q8[QuantAt(sub, v, order)];
        return sum;
    }
}
