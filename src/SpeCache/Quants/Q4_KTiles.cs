using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q4_K weights against Q8_K activations, on 512-bit registers (AVX512-BW; .NET exposes no
/// 512-bit VNNI, and u8×s8 pair sums then a word multiply-add by the scale do the same work).
/// One register holds two 32-value sub-blocks: the low (or high) nibbles of 64 stored bytes,
/// i.e. sub-blocks (0,2), (1,3), (4,6), (5,7). Packed activation blocks store their quants in
/// that order, so each is one load. Per output and 256-value block: for each register, pair
/// sums (at most 2·15·127, no saturation), then multiplied by each half's 6-bit scale and
/// added into 16 exact 32-bit lanes; the lanes go to float with one multiply-add by
/// (d × activation scale). The mins' term of a block is the dot of eight weight-side floats
/// (dmin × each sub-block's min) with eight activation-side ones (activation scale × each
/// sub-block's sum), the latter made once when the activation row is packed, so it costs one
/// 8-lane multiply-add per output and block. A weight tile's scales, min floats and d are
/// unpacked once per tile into a small table that the activation tiles passing over it reuse.
/// </summary>
internal sealed unsafe class Q4_KTiles : TileKernel
{
    public static readonly Q4_KTiles Instance = new();

    public static readonly bool Supported = IsSupported && Avx512BW.IsSupported;

    /// <summary>Bytes per weight block in the unpacked table: 8 float mins (dmin × min), 8 short scales, d.</summary>
    const int MetaBytes = 64;

    /// <summary>
    /// Packed block (this kernel's and <see cref="Q4_KTiles256"/>'s): float d, padding, the 8
    /// sub-block sums of the quants as shorts at 8 (<see cref="Q4_KTiles256"/>'s integer mins),
    /// padding, the same sums × d as floats at 32 (this kernel's), 256 reordered quants at 64.
    /// </summary>
    internal const int PackedBlockBytes = 320;
    internal const int ShortSumsAt = 8;
    internal const int SumsAt = 32;
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
                block.Slice(4 + 32 * sub, 32).CopyTo(dst.Slice(QuantsAt + 32 * Slot(sub)));
        }
    }

    /// <summary>Where sub-block <paramref name="sub"/> sits among the packed quants: order 0, 2, 1, 3, 4, 6, 5, 7.</summary>
    internal static int Slot(int sub) => (sub & 4) | ((sub & 1) << 1) | ((sub >> 1) & 1);

    internal static float[] UnpackBlocks(ReadOnlySpan<byte> packed, int cols)
    {
        var x = new float[cols];
        for (int b = 0; b < cols / Q8_K.BlockSize; b++)
        {
            var block = packed.Slice(b * PackedBlockBytes, PackedBlockBytes);
            float d = BitConverter.ToSingle(block);
            for (int v = 0; v < Q8_K.BlockSize; v++)
                x[b * Q8_K.BlockSize + v] = d * (sbyte)block[QuantsAt + 32 * Slot(v / 32) + v % 32];
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

    /// <summary>One weight row's table: the scales as words, dmin × each min and d as floats.</summary>
    static void UnpackMeta(byte* row, byte* meta, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            byte* block = row + (long)b * Q4_K.BlockBytes;
            byte* mb = meta + b * MetaBytes;
            Q4_K.Unpack(block + 4, out ulong sc, out ulong mins);
            var dd = DAndDMin(block);
            MinFloats(mins, dd).Store((float*)mb);
            Words(sc).Store((short*)(mb + 32));
            *(float*)(mb + 48) = dd.ToScalar();
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

    /// <summary>
    /// TM weight rows × TN activation rows. The integer accumulators sIJ (weight row I,
    /// activation row J) live for one block in registers; the float ones, touched once per
    /// block, live in a small stack table.
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
        var mask = Vector512.Create((byte)0x0F);
        for (int b = 0; b < nb; b++)
        {
            Vector512<int> s00 = default, s10 = default, s20 = default, s30 = default;
            Vector512<int> s01 = default, s11 = default, s21 = default, s31 = default;
            Vector512<int> s02 = default, s12 = default, s22 = default, s32 = default;
            Vector512<int> s03 = default, s13 = default, s23 = default, s33 = default;
            byte* qs = w + (long)b * Q4_K.BlockBytes + 16;
            byte* mb = meta + b * MetaBytes;
            byte* x = a + (long)b * PackedBlockBytes + QuantsAt;
            for (int half = 0; half < 2; half++)
            {
                var v0 = Vector512.Load(qs + 64 * half);
                var v1 = TM.Value > 1 ? Vector512.Load(qs + ws + 64 * half) : default;
                var v2 = TM.Value > 2 ? Vector512.Load(qs + 2 * ws + 64 * half) : default;
                var v3 = TM.Value > 3 ? Vector512.Load(qs + 3 * ws + 64 * half) : default;
                // One broadcast load each (Vector512.Create of a loaded Vector128 compiles to five instructions).
                var sc0 = Avx512F.BroadcastVector128ToVector512((int*)(mb + 32)).AsInt16();
                var sc1 = TM.Value > 1 ? Avx512F.BroadcastVector128ToVector512((int*)(mb + metaRow + 32)).AsInt16() : default;
                var sc2 = TM.Value > 2 ? Avx512F.BroadcastVector128ToVector512((int*)(mb + 2 * metaRow + 32)).AsInt16() : default;
                var sc3 = TM.Value > 3 ? Avx512F.BroadcastVector128ToVector512((int*)(mb + 3 * metaRow + 32)).AsInt16() : default;
                for (int nibble = 0; nibble < 2; nibble++)
                {
                    var pick = half == 0 ? (nibble == 0 ? Q4_K.SubBlock0 : Q4_K.SubBlock1) : (nibble == 0 ? Q4_K.SubBlock2 : Q4_K.SubBlock3);
                    var n0 = v0 & mask;
                    var n1 = TM.Value > 1 ? v1 & mask : default;
                    var n2 = TM.Value > 2 ? v2 & mask : default;
                    var n3 = TM.Value > 3 ? v3 & mask : default;
                    var k0 = Avx512BW.PermuteVar32x16(sc0, pick);
                    var k1 = TM.Value > 1 ? Avx512BW.PermuteVar32x16(sc1, pick) : default;
                    var k2 = TM.Value > 2 ? Avx512BW.PermuteVar32x16(sc2, pick) : default;
                    var k3 = TM.Value > 3 ? Avx512BW.PermuteVar32x16(sc3, pick) : default;
                    int offset = 128 * half + 64 * nibble;
                    Pair<TM>(x + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s00, ref s10, ref s20, ref s30);
                    if (TN.Value > 1) Pair<TM>(x + aStride + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s01, ref s11, ref s21, ref s31);
                    if (TN.Value > 2) Pair<TM>(x + 2 * aStride + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s02, ref s12, ref s22, ref s32);
                    if (TN.Value > 3) Pair<TM>(x + 3 * aStride + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s03, ref s13, ref s23, ref s33);
                    v0 = Vector512.ShiftRightLogical(v0.AsUInt16(), 4).AsByte();
                    if (TM.Value > 1) v1 = Vector512.ShiftRightLogical(v1.AsUInt16(), 4).AsByte();
                    if (TM.Value > 2) v2 = Vector512.ShiftRightLogical(v2.AsUInt16(), 4).AsByte();
                    if (TM.Value > 3) v3 = Vector512.ShiftRightLogical(v3.AsUInt16(), 4).AsByte();
                }
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

    /// <summary>
    /// Each weight row against up to four activation rows, everything in registers and the scales
    /// unpacked from each weight block as it is read (once for all the activation rows): per output
    /// the same integer lane sums, the same two multiply-adds per block with the same operands, and
    /// the same final reduction as <see cref="Tile{TM, TN}"/>, so the bits agree.
    /// </summary>
    [SkipLocalsInit]
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        var mask = Vector512.Create((byte)0x0F);
        for (int r = 0; r < rows; r++)
        {
            byte* row = w + r * ws;
            Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            Vector256<float> min0 = default, min1 = default, min2 = default, min3 = default;
            for (int b = 0; b < nb; b++)
            {
                byte* xb = a + (long)b * PackedBlockBytes;
                byte* wb = row + (long)b * Q4_K.BlockBytes;
                Q4_K.Unpack(wb + 4, out ulong sc, out ulong mins);
                var scales = Avx512BW.ConvertToVector512Int16(Vector256.Create(Vector128.CreateScalar(sc).AsByte(), Vector128<byte>.Zero)).AsInt16();
                var v0 = Vector512.Load(wb + 16);
                var v1 = Vector512.Load(wb + 16 + 64);
                var weights = new BlockWeights(
                    v0 & mask, Vector512.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & mask,
                    v1 & mask, Vector512.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & mask,
                    Avx512BW.PermuteVar32x16(scales, Q4_K.SubBlock0), Avx512BW.PermuteVar32x16(scales, Q4_K.SubBlock1),
                    Avx512BW.PermuteVar32x16(scales, Q4_K.SubBlock2), Avx512BW.PermuteVar32x16(scales, Q4_K.SubBlock3));
                var dd = DAndDMin(wb);
                float d = dd.ToScalar();
                var minFloats = MinFloats(mins, dd);
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

    /// <summary>One weight block decoded for <see cref="RowBlock"/>: its four registers of nibbles and the scale words each takes.</summary>
    readonly record struct BlockWeights(
        Vector512<byte> N0, Vector512<byte> N1, Vector512<byte> N2, Vector512<byte> N3,
        Vector512<short> K0, Vector512<short> K1, Vector512<short> K2, Vector512<short> K3);

    /// <summary>One activation row's block (at <paramref name="xb"/>) against a decoded weight block, into that row's accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void RowBlock(byte* xb, in BlockWeights w, float d, Vector256<float> minFloats, ref Vector512<float> acc, ref Vector256<float> minAcc)
    {
        sbyte* q = (sbyte*)(xb + QuantsAt);
        var s = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(w.N0, Vector512.Load(q)), w.K0);
        s += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(w.N1, Vector512.Load(q + 64)), w.K1);
        s += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(w.N2, Vector512.Load(q + 128)), w.K2);
        s += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(w.N3, Vector512.Load(q + 192)), w.K3);
        acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(s), Vector512.Create(d * *(float*)xb), acc);
        minAcc = Fma.MultiplyAdd(minFloats, Vector256.Load((float*)(xb + SumsAt)), minAcc);
    }

    /// <summary>One register of activations (two sub-blocks at <paramref name="x"/>) against the tile's nibbles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Pair<TM>(byte* x, Vector512<byte> n0, Vector512<byte> n1, Vector512<byte> n2, Vector512<byte> n3,
        Vector512<short> k0, Vector512<short> k1, Vector512<short> k2, Vector512<short> k3,
        ref Vector512<int> s0, ref Vector512<int> s1, ref Vector512<int> s2, ref Vector512<int> s3) where TM : struct, ITileExtent
    {
        var q = Vector512.Load((sbyte*)x);
        s0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(n0, q), k0);
        if (TM.Value > 1) s1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(n1, q), k1);
        if (TM.Value > 2) s2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(n2, q), k2);
        if (TM.Value > 3) s3 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(n3, q), k3);
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
            *acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(s), Vector512.Create(*(float*)(meta + 48) * dx), *acc);
            *minAcc = Fma.MultiplyAdd(Vector256.Load((float*)meta), sums, *minAcc);
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
                    // Lane 4l..4l+3 of register r holds values 4l.. of sub-block (0,1,4,5)[r] + 2 * (lane / 8).
                    int sum = 0;
                    for (int r = 0; r < 4; r++)
                        sum += ScaledPart(wb, q8, (r & 1) + 4 * (r >> 1) + 2 * (lane / 8), 4 * (lane % 8));
                    acc[lane] = MathF.FusedMultiplyAdd(sum, d, acc[lane]);
                }
                ReferenceMins(wb, xb, minAcc);
            }
        Span<float> folded = stackalloc float[8];
        for (int l = 0; l < 8; l++) folded[l] = acc[l] + acc[l + 8];
        return HorizontalSum(folded) - HorizontalSum(minAcc);
    }

    /// <summary>Scalar: sub-block <paramref name="sub"/>'s scale × the dot of its values first..first+3 with the activation's (one integer lane's share).</summary>
    internal static int ScaledPart(byte* wb, sbyte* q8, int sub, int first)
    {
        Q4_K.ScaleMin(sub, wb + 4, out int sc, out _);
        int part = 0;
        for (int v = first; v < first + 4; v++)
            part += ((wb[16 + 32 * (sub / 2) + v] >> (4 * (sub & 1))) & 0xF) * q8[32 * Slot(sub) + v];
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
            minAcc[l] = MathF.FusedMultiplyAdd(m * dmin, SubBlockSum(q8, l) * dx, minAcc[l]);
        }
    }

    /// <summary>Scalar: the sum of sub-block <paramref name="sub"/>'s 32 packed activation quants, taken from the quants themselves so the packed sums are checked too.</summary>
    internal static int SubBlockSum(sbyte* q8, int sub)
    {
        int sum = 0;
        for (int v = 0; v < 32; v++) sum += q8[32 * Slot(sub) + v];
        return sum;
    }

    /// <summary>The eight bytes of <paramref name="packed"/> (a block's unpacked scales or mins) as words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<short> Words(ulong packed) => Sse41.ConvertToVector128Int16(Vector128.CreateScalar(packed).AsByte());

}
