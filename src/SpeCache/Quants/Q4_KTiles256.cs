using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q4_K weights against Q8_K activations on 256-bit registers, for CPUs with AVX2 and FMA but not
/// the AVX512-BW that <see cref="Q4_KTiles"/> needs (AMD Zen 2 and 3, most Intel desktops and
/// laptops). A 32-byte chunk c of a block's quants holds sub-block 2c in its low nibbles and
/// 2c + 1 in its high ones, each a whole register of 32 values in order, so the packed
/// activations keep Q8_K's own order (<see cref="Q4_KTiles.QuantOrder.Natural"/>) and each
/// sub-block's 32 quants are one load. Per output, block and sub-block: u8 × s8 pair sums (at most
/// 2·15·127), a word multiply-add by the 6-bit scale into eight exact 32-bit lanes (lane l sums
/// values 4l..4l+3 of every sub-block), then one float multiply-add by d × activation scale. The
/// mins' term is integer too: the eight 6-bit mins against the activation's short sub-block sums
/// by one word multiply-add (lane l: sub-blocks 2l and 2l + 1), then a float multiply-add by
/// dmin × activation scale.
/// <para>
/// A 128-bit form of this kernel (a sub-block's two 16-value halves added as words before one
/// scale multiply-add, about 100 instructions a block where this takes about 60) was faster on
/// first-generation Zen, which runs a 256-bit instruction as two halves. Every AVX2 core since
/// runs them whole: on a Zen 3 EPYC (MatMulBench, both forms in the same minutes) this one reads
/// Q4_K weights faster in decode and in prefill products (figures in <c>bench/Bench/RESULTS.md</c>).
/// </para>
/// <para>
/// Every row count takes the few-row path (<see cref="TileKernel.RowByRowInPanels{TRows}"/>): each
/// weight block decoded once for up to four activation rows, the weight rows in panels that stay
/// in L2 while the activation rows pass four at a time. A tile reading the scales from a table
/// unpacked per weight tile was slower on the Zen 3 for 8 to 512 rows (<c>MatMulBench gemm</c>, two
/// threads, alternated twice: 8 rows 96-111 -> 154-172 GOPS, 512 rows 132-150 -> 148-181).
/// </para>
/// </summary>
internal sealed unsafe class Q4_KTiles256 : TileKernel
{
    public static readonly Q4_KTiles256 Instance = new();

    public static readonly bool Supported = IsSupported;

    const int PackedBlockBytes = Q4_KTiles.PackedBlockBytes;
    const int ShortSumsAt = Q4_KTiles.ShortSumsAt;
    const int QuantsAt = Q4_KTiles.QuantsAt;
    const Q4_KTiles.QuantOrder Order = Q4_KTiles.QuantOrder.Natural;

    public override int PackedRowBytes(int cols) => Q4_KTiles.PackedBytes(cols);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => Q4_KTiles.PackBlocks(x, packed, Order);

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => Q4_KTiles.UnpackBlocks(packed, cols, Order);

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride) =>
        RowByRowInPanels<Kernel>(n, w, weightRowBytes, rows, cols / Q4_K.BlockSize, a, packedRowBytes, y, yStride);

    struct Kernel : IRowByRow
    {
        public static void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent =>
            Direct<TN>(w, ws, rows, nb, a, aStride, y, yStride);
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
        // Sub-blocks 2c and 2c + 1: 64 consecutive quants.
        sbyte* x = (sbyte*)(xb + QuantsAt + 64 * c);
        s0 += Scaled(lo, x, kLo) + Scaled(hi, x + 32, kHi);
        if (TN.Value > 1) s1 += Scaled(lo, x + aStride, kLo) + Scaled(hi, x + aStride + 32, kHi);
        if (TN.Value > 2) s2 += Scaled(lo, x + 2 * aStride, kLo) + Scaled(hi, x + 2 * aStride + 32, kHi);
        if (TN.Value > 3) s3 += Scaled(lo, x + 3 * aStride, kLo) + Scaled(hi, x + 3 * aStride + 32, kHi);
    }

    /// <summary>One sub-block's 32 nibbles against its 32 activation quants at <paramref name="x"/>: pair sums, then times the scale into eight exact lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> Scaled(Vector256<byte> nibbles, sbyte* x, Vector256<short> scale) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(nibbles, Vector256.Load(x)), scale);

    /// <summary>
    /// End of a block for one (weight row, activation row): the integer sums times d × the
    /// activation scale, and the mins' integer dot times dmin × the activation scale.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish(byte* x, Vector128<float> dAndDMin, Vector128<short> mins, ref Vector256<float> acc, ref Vector128<float> minAcc, Vector256<int> s)
    {
        var scaled = dAndDMin * Vector128.Create(*(float*)x);
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), Avx2.BroadcastScalarToVector256(scaled), acc);
        var minDot = Sse2.MultiplyAddAdjacent(mins, Vector128.Load((short*)(x + ShortSumsAt)));
        minAcc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(minDot), Avx.Permute(scaled, 0b01_01_01_01), minAcc);
    }

    /// <summary>
    /// Each weight row against up to four activation rows, everything in registers and each
    /// block's scales unpacked as it is read, so each output's integer lanes, multiply-adds and
    /// reduction are the same whatever the row count.
    /// </summary>
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        for (int r = 0; r < rows; r++)
        {
            Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            Vector128<float> min0 = default, min1 = default, min2 = default, min3 = default;
            // Pointers stepped per block: the loop is bound by the count of instructions it issues,
            // and the JIT recomputed each address from the block index by multiplies.
            byte* wb = w + r * ws, xb = a;
            for (int b = 0; b < nb; b++, wb += Q4_K.BlockBytes, xb += PackedBlockBytes)
            {
                PrefetchAhead(wb, Q4_K.BlockBytes);
                var scalesAndMins = ScalesAndMins(wb + 4);
                Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
                ChunkRows<TN>(wb, SpreadScale(scalesAndMins, 0), SpreadScale(scalesAndMins, 1), xb, aStride, 0, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scalesAndMins, 2), SpreadScale(scalesAndMins, 3), xb, aStride, 1, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scalesAndMins, 4), SpreadScale(scalesAndMins, 5), xb, aStride, 2, ref s0, ref s1, ref s2, ref s3);
                ChunkRows<TN>(wb, SpreadScale(scalesAndMins, 6), SpreadScale(scalesAndMins, 7), xb, aStride, 3, ref s0, ref s1, ref s2, ref s3);
                var dd = Q4_KTiles.DAndDMin(wb);
                var minWords = Sse2.UnpackHigh(scalesAndMins.GetLower(), Vector128<byte>.Zero).AsInt16();
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

    /// <summary>
    /// A block's twelve bytes of 6-bit scales and mins (at <paramref name="packed"/>) unpacked in
    /// both 128-bit halves: bytes 0-7 the scales, 8-15 the mins. <see cref="Q4_K.Unpack"/>'s bit
    /// moves in ten vector instructions instead of about thirty scalar ones (this loop is bound by
    /// the instructions it issues). The 16-byte load takes 4 bytes of the block's quants besides.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<byte> ScalesAndMins(byte* packed)
    {
        var v = Avx2.BroadcastVector128ToVector256(packed);
        const byte zero = 0x80; // a shuffle control that zeroes its byte
        // Bytes 0-3 and 8-11 from their own low six bits; 4-7 and 12-15 from the low and high nibbles
        // of bytes 8-11, with bits 4-5 from the top two bits of bytes 0-3 and 4-7.
        var own = Avx2.Shuffle(v, Vector256.Create((byte)0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
        var tops = Avx2.Shuffle(v, Vector256.Create(zero, zero, zero, zero, 0, 1, 2, 3, zero, zero, zero, zero, 4, 5, 6, 7,
            zero, zero, zero, zero, 0, 1, 2, 3, zero, zero, zero, zero, 4, 5, 6, 7));
        var low = own & Vector256.Create((byte)63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0, 63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
        var high = (own.AsUInt16() >>> 4).AsByte() & Vector256.Create(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, (byte)15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
        return low | high | ((tops.AsUInt16() >>> 2).AsByte() & Vector256.Create((byte)0x30));
    }

    /// <summary>Sub-block <paramref name="sub"/>'s scale (a constant at each call) in every word, by a byte shuffle of <see cref="ScalesAndMins"/>'s bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<short> SpreadScale(Vector256<byte> scalesAndMins, int sub) =>
        Avx2.Shuffle(scalesAndMins, Vector256.Create((ushort)(0x8000 | sub)).AsByte()).AsInt16();

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q4_K.BlockSize;
        Span<float> acc = stackalloc float[8];
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
                for (int lane = 0; lane < 8; lane++)
                {
                    // Lane l holds values 4l..4l+3 of every sub-block.
                    int sum = 0;
                    for (int sub = 0; sub < 8; sub++)
                        sum += Q4_KTiles.ScaledPart(wb, q8, sub, 4 * lane, Order);
                    acc[lane] = MathF.FusedMultiplyAdd(sum, d, acc[lane]);
                }
                for (int lane = 0; lane < 4; lane++)
                {
                    // Lane l of the mins: sub-blocks 2l and 2l + 1.
                    int minDot = 0;
                    for (int sub = 2 * lane; sub < 2 * lane + 2; sub++)
                    {
                        Q4_K.ScaleMin(sub, wb + 4, out _, out int m);
                        minDot += m * Q4_KTiles.SubBlockSum(q8, sub, Order);
                    }
                    minAcc[lane] = MathF.FusedMultiplyAdd(minDot, dmin, minAcc[lane]);
                }
            }
        return HorizontalSum(acc) - HorizontalSum(minAcc);
    }
}
