using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q6_K weights against Q8_K activations on 256-bit registers (AVX2 and FMA): the tile for CPUs
/// without the AVX512-BW that <see cref="Q6_KTiles"/> needs, on <see cref="Q6_KTiles"/>'s packed
/// activations. Register k = 4h + r of a block holds its unsigned 6-bit values
/// 128h + 32r..128h + 32r + 31, whose two 16-value groups fill the register's two 128-bit
/// halves. Per output and block: u8 × s8 pair sums (at most 2·63·127), a word multiply-add by
/// each group's int8 scale into eight exact 32-bit lanes (lane l sums values 4l..4l+3 of every
/// register), minus 32 × (scale · activation group sums) for the -32 offset of every value, then
/// one float multiply-add by d × activation scale.
/// <para>
/// Building a register takes five to seven operations on two or three loads, about as many as its
/// products with four activation rows, so matrix products first unpack each weight tile's values
/// and scale words into a table that every activation tile passing over it reads (512 bytes per
/// block and row); up to four activation rows take the values straight from the block.
/// </para>
/// </summary>
internal sealed unsafe class Q6_KTiles256 : TileKernel
{
    public static readonly Q6_KTiles256 Instance = new();

    public static readonly bool Supported = IsSupported;

    /// <summary>
    /// Bytes per weight block in the unpacked table: the eight registers of 6-bit values, then
    /// each register's scales as words (eight of its first group's, eight of its second's), then
    /// the 16 scales as words (the offset's multiply-add), then d as a float.
    /// </summary>
    const int MetaBytes = 576;
    const int ScaleWordsAt = 256;
    const int GroupScalesAt = 512;
    const int DAt = 544;

    const int PackedBlockBytes = Q6_KTiles.PackedBlockBytes;
    const int GroupSumsAt = Q6_KTiles.GroupSumsAt;
    const int QuantsAt = Q6_KTiles.QuantsAt;

    public override int PackedRowBytes(int cols) => Q6_KTiles.PackedBytes(cols);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => Q6_KTiles.PackBlocks(x, packed);

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => Q6_KTiles.UnpackBlocks(packed, cols);

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        int nb = cols / Q6_K.BlockSize;
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
            Q6_KTiles256.Tile<TM, TN>(table, nb, a, aStride, y, yStride);

        public static void Unpack(byte* row, byte* table, int nb) => UnpackRow(row, table, nb);

        public static void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent =>
            Direct<TN>(w, ws, rows, nb, a, aStride, y, yStride);
    }

    /// <summary>One weight row's table (see <see cref="MetaBytes"/>).</summary>
    static void UnpackRow(byte* row, byte* meta, int nb)
    {
        for (int b = 0; b < nb; b++)
        {
            byte* wb = row + (long)b * Q6_K.BlockBytes;
            byte* mb = meta + b * MetaBytes;
            var scales = Vector128.Load((sbyte*)(wb + 192));
            for (int h = 0; h < 2; h++)
            {
                Q6_K.SixBitValues(wb, h, out var q1, out var q2, out var q3, out var q4);
                q1.Store(mb + 128 * h);
                q2.Store(mb + 128 * h + 32);
                q3.Store(mb + 128 * h + 64);
                q4.Store(mb + 128 * h + 96);
            }
            for (int k = 0; k < 8; k++) RegisterScales(scales, k).Store((short*)(mb + ScaleWordsAt + 32 * k));
            Avx2.ConvertToVector256Int16(scales).Store((short*)(mb + GroupScalesAt));
            *(float*)(mb + DAt) = QuantMath.ToFloat(*(ushort*)(wb + 208));
        }
    }

    /// <summary>
    /// TM weight rows × TN activation rows from the tables: each weight row of a block in turn
    /// against the tile's activation rows, four integer accumulators in registers (a 4 × 4 tile of
    /// them would not fit AVX2's 16 registers), the float ones in a small stack table.
    /// </summary>
    [SkipLocalsInit] // the accumulators are zeroed below
    static void Tile<TM, TN>(byte* meta, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        var acc = stackalloc Vector256<float>[16]; // [I * 4 + J]
        for (int k = 0; k < 16; k++) acc[k] = default;
        long metaRow = (long)nb * MetaBytes;
        for (int b = 0; b < nb; b++)
        {
            byte* xb = a + (long)b * PackedBlockBytes;
            for (int i = 0; i < TM.Value; i++)
            {
                byte* mb = meta + i * metaRow + b * MetaBytes;
                Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
                for (int k = 0; k < 8; k++)
                    Register<TN>(Vector256.Load(mb + 32 * k), Vector256.Load((short*)(mb + ScaleWordsAt + 32 * k)), xb, aStride, k, ref s0, ref s1, ref s2, ref s3);
                var groupScales = Vector256.Load((short*)(mb + GroupScalesAt));
                var d = Vector256.Create(*(float*)(mb + DAt));
                Vector256<float>* ai = acc + 4 * i;
                ai[0] = Finish(ai[0], xb, groupScales, d, s0);
                if (TN.Value > 1) ai[1] = Finish(ai[1], xb + aStride, groupScales, d, s1);
                if (TN.Value > 2) ai[2] = Finish(ai[2], xb + 2 * aStride, groupScales, d, s2);
                if (TN.Value > 3) ai[3] = Finish(ai[3], xb + 3 * aStride, groupScales, d, s3);
            }
        }
        for (int j = 0; j < TN.Value; j++)
            for (int i = 0; i < TM.Value; i++)
                y[j * yStride + i] = HorizontalSum(acc[i * 4 + j]);
    }

    /// <summary>
    /// Each weight row against up to four activation rows, the values and scales built from the
    /// block as it is read: the same integer lanes, multiply-adds and reduction as
    /// <see cref="Tile{TM, TN}"/>, so the bits agree.
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
    /// each half spread over that half, the same words as <see cref="RegisterScales"/>'.
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

    /// <summary>
    /// Register <paramref name="k"/>'s scales as words: its first group's (2k) in the lower half,
    /// its second's (2k + 1) in the upper, by a byte shuffle of the block's 16 int8 scales and a
    /// sign extension (the weight table's form, made once per tile).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<short> RegisterScales(Vector128<sbyte> scales, int k)
    {
        var pick = Vector128.Create((ulong)(byte)(2 * k) * 0x0101010101010101UL, (ulong)(byte)(2 * k + 1) * 0x0101010101010101UL).AsSByte();
        return Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, pick));
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
