using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q6_K weights against Q8_K activations on 256-bit registers (AVX2 and FMA): the kernel for CPUs
/// without the AVX512-BW that <see cref="Q6_KTiles"/> needs, on <see cref="Q6_KTiles"/>'s packed
/// activations. Register k = 4h + r of a block holds its unsigned 6-bit values
/// 128h + 32r..128h + 32r + 31, whose two 16-value groups fill the register's two 128-bit
/// halves. Per output and block: u8 × s8 pair sums (at most 2·63·127), a word multiply-add by
/// each group's int8 scale into eight exact 32-bit lanes (lane l sums values 4l..4l+3 of every
/// register), minus 32 × (scale · activation group sums) for the -32 offset of every value, then
/// one float multiply-add by d × activation scale.
/// <para>
/// Every row count takes the few-row path (<see cref="TileKernel.RowByRowInPanels{TRows}"/>): each
/// weight block decoded once for up to four activation rows, the weight rows in panels that stay
/// in L2 while the activation rows pass four at a time. Until 2026-12-07 more rows first unpacked
/// each weight tile's values and scale words into a table (512 bytes per block and row) for tiles
/// to read; on a Zen 3 EPYC the panels did 8 to 512 rows faster (<c>MatMulBench gemm</c>, two
/// threads, alternated twice: 8 rows 78-86 -> 143-160 GOPS, 512 rows 115-125 -> 158).
/// </para>
/// </summary>
internal sealed unsafe class Q6_KTiles256 : TileKernel
{
    public static readonly Q6_KTiles256 Instance = new();

    public static readonly bool Supported = IsSupported;

    const int PackedBlockBytes = Q6_KTiles.PackedBlockBytes;
    const int GroupSumsAt = Q6_KTiles.GroupSumsAt;
    const int QuantsAt = Q6_KTiles.QuantsAt;

    public override int PackedRowBytes(int cols) => Q6_KTiles.PackedBytes(cols);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => Q6_KTiles.PackBlocks(x, packed);

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => Q6_KTiles.UnpackBlocks(packed, cols);

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride) =>
        RowByRowInPanels<Kernel>(n, w, weightRowBytes, rows, cols / Q6_K.BlockSize, a, packedRowBytes, y, yStride);

    struct Kernel : IRowByRow
    {
        public static void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent =>
            Direct<TN>(w, ws, rows, nb, a, aStride, y, yStride);
    }

    /// <summary>
    /// Each weight row against up to four activation rows, the values and scales built from the
    /// block as it is read, so each output's integer lanes, multiply-adds and reduction are the
    /// same whatever the row count.
    /// </summary>
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        for (int r = 0; r < rows; r++)
        {
            Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            // Pointers stepped per block: the loop is bound by the count of instructions it issues,
            // and the JIT recomputed each address from the block index by multiplies.
            byte* wb = w + r * ws, xb = a;
            for (int b = 0; b < nb; b++, wb += Q6_K.BlockBytes, xb += PackedBlockBytes)
            {
                PrefetchAhead(wb, Q6_K.BlockBytes);
                var scales = Vector128.Load((sbyte*)(wb + 192));
                var evenOdd = EvenOddScaleWords(scales);
                Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
                Half<TN>(wb, evenOdd, xb, aStride, 0, ref s0, ref s1, ref s2, ref s3);
                Half<TN>(wb, evenOdd, xb, aStride, 1, ref s0, ref s1, ref s2, ref s3);
                var groupScales = Avx2.ConvertToVector256Int16(scales);
                var d = Vector256.Create(QuantMath.ToFloat(*(ushort*)(wb + 208)));
                acc0 = Finish(acc0, xb, groupScales, d, s0);
                if (TN.Value > 1) acc1 = Finish(acc1, xb + aStride, groupScales, d, s1);
                if (TN.Value > 2) acc2 = Finish(acc2, xb + 2 * aStride, groupScales, d, s2);
                if (TN.Value > 3) acc3 = Finish(acc3, xb + 3 * aStride, groupScales, d, s3);
            }
            y[r] = HorizontalSum(acc0);
            if (TN.Value > 1) y[yStride + r] = HorizontalSum(acc1);
            if (TN.Value > 2) y[2 * yStride + r] = HorizontalSum(acc2);
            if (TN.Value > 3) y[3 * yStride + r] = HorizontalSum(acc3);
        }
    }

    /// <summary>
    /// A block's 16 int8 scales as words, the even groups' in the lower half and the odd groups' in
    /// the upper, so that one byte shuffle (<see cref="SpreadRegisterScales"/>) gives a register
    /// its two groups' scale words: register k's groups are 2k and 2k + 1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<short> EvenOddScaleWords(Vector128<sbyte> scales) =>
        Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, Vector128.Create((sbyte)0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15)));

    /// <summary>
    /// Register <paramref name="k"/>'s scale words from <see cref="EvenOddScaleWords"/>: word k of
    /// each half spread over that half, its first group's (2k) scale in the lower half and its
    /// second's (2k + 1) in the upper.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<short> SpreadRegisterScales(Vector256<short> evenOdd, int k) =>
        Avx2.Shuffle(evenOdd.AsByte(), Vector256.Create((ushort)(((2 * k + 1) << 8) | (2 * k))).AsByte()).AsInt16();

    /// <summary>Half <paramref name="h"/> (a constant at each call, so the scale shuffles are constants) of a block against up to four activation rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Half<TN>(byte* wb, Vector256<short> evenOdd, byte* xb, int aStride, int h,
        ref Vector256<int> s0, ref Vector256<int> s1, ref Vector256<int> s2, ref Vector256<int> s3) where TN : struct, ITileExtent
    {
        Q6_K.SixBitValues(wb, h, out var q1, out var q2, out var q3, out var q4);
        Register<TN>(q1, SpreadRegisterScales(evenOdd, 4 * h), xb, aStride, 4 * h, ref s0, ref s1, ref s2, ref s3);
        Register<TN>(q2, SpreadRegisterScales(evenOdd, 4 * h + 1), xb, aStride, 4 * h + 1, ref s0, ref s1, ref s2, ref s3);
        Register<TN>(q3, SpreadRegisterScales(evenOdd, 4 * h + 2), xb, aStride, 4 * h + 2, ref s0, ref s1, ref s2, ref s3);
        Register<TN>(q4, SpreadRegisterScales(evenOdd, 4 * h + 3), xb, aStride, 4 * h + 3, ref s0, ref s1, ref s2, ref s3);
    }

    /// <summary>One register of 6-bit values (register <paramref name="k"/> of the block) and its scale words against TN activation blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Register<TN>(Vector256<byte> q, Vector256<short> scale, byte* xb, int aStride, int k,
        ref Vector256<int> s0, ref Vector256<int> s1, ref Vector256<int> s2, ref Vector256<int> s3) where TN : struct, ITileExtent
    {
        // Values 128h + 32r.. sit at 64r + 32h among the packed quants (Q6_KTiles.Slot).
        sbyte* x = (sbyte*)(xb + QuantsAt + 64 * (k & 3) + 32 * (k >> 2));
        s0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.Load(x)), scale);
        if (TN.Value > 1) s1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.Load(x + aStride)), scale);
        if (TN.Value > 2) s2 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.Load(x + 2 * aStride)), scale);
        if (TN.Value > 3) s3 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.Load(x + 3 * aStride)), scale);
    }

    /// <summary>A block's integer lanes for one output into its float accumulator: the -32 offset, then (d × activation scale).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Finish(Vector256<float> acc, byte* xb, Vector256<short> groupScales, Vector256<float> d, Vector256<int> s)
    {
        s -= Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(xb + GroupSumsAt)), groupScales) << 5;
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), d * Vector256.Create(*(float*)xb), acc);
    }

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q6_K.BlockSize;
        Span<float> acc = stackalloc float[8];
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
                for (int lane = 0; lane < 8; lane++)
                {
                    // Lane l of register k covers values 32k + 4l..32k + 4l + 3.
                    int sum = 0;
                    for (int k = 0; k < 8; k++)
                        for (int j = 0; j < 4; j++)
                        {
                            int v = 32 * k + 4 * lane + j;
                            sum += scales[v / 16] * Q6_KTiles.Unsigned(wb, v) * q8[Q6_KTiles.Slot(v)];
                        }
                    sum -= 32 * (groups[2 * lane] * scales[2 * lane] + groups[2 * lane + 1] * scales[2 * lane + 1]);
                    acc[lane] = MathF.FusedMultiplyAdd(sum, d, acc[lane]);
                }
            }
        return HorizontalSum(acc);
    }
}
