using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>How a weight format with 32-value blocks and a half scale first (Q8_0, Q4_0) feeds <see cref="Q8_0Tiles{TW}"/>.</summary>
internal unsafe interface IBlock32Weights
{
    static abstract int BlockBytes { get; }

    /// <summary>
    /// log2 of the offset the loaded bytes carry: VNNI multiplies unsigned by signed bytes, so
    /// the weights are loaded as q + offset (≥ 0) and offset * sum(x) is subtracted again.
    /// </summary>
    static abstract int OffsetShift { get; }

    /// <summary>The block's 32 values as unsigned bytes, q + offset, in value order.</summary>
    static abstract Vector256<byte> Load(byte* block);

    /// <summary>Value <paramref name="k"/> of the block (q, without the offset).</summary>
    static abstract int Value(byte* block, int k);

    /// <summary>The block's 32 values q as signed bytes, in value order.</summary>
    static abstract Vector256<sbyte> LoadSigned(byte* block);
}

internal unsafe struct Q8_0Weights : IBlock32Weights
{
    public static int BlockBytes => Q8_0.BlockBytes;
    public static int OffsetShift => 7;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Load(byte* block) => Vector256.Load(block + 2) ^ Vector256.Create((byte)0x80);

    public static int Value(byte* block, int k) => ((sbyte*)(block + 2))[k];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> LoadSigned(byte* block) => Vector256.Load((sbyte*)(block + 2));
}

internal unsafe struct Q4_0Weights : IBlock32Weights
{
    public static int BlockBytes => Q4_0.BlockBytes;
    public static int OffsetShift => 3; // nibbles are stored as q + 8 already

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Load(byte* block)
    {
        // Low nibbles are values 0..15, high nibbles 16..31: the two halves line up with the activations.
        var packed = Vector128.Load(block + 2);
        return Vector256.Create(packed, Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
    }

    public static int Value(byte* block, int k) => (k < 16 ? block[2 + k] & 0xF : block[2 + k - 16] >> 4) - 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> LoadSigned(byte* block) => Load(block).AsSByte() - Vector256.Create((sbyte)8);
}

/// <summary>
/// Q8_0 and Q4_0 weights against Q8_0 activations. A packed activation row holds, per 32-value
/// block, the same 32 bytes as <see cref="Q8_0.QuantizeActivationRow"/> (plane 1), the negated
/// sums of each four of them (plane 2, the offset correction's input, so it costs one shift per
/// block and tile instead of work per output; written with VNNI only, the one path that reads it)
/// and the half scale as a float (plane 3).
/// Per output and block: eight exact lane sums of four products, converted to float and
/// multiply-added with (weight scale × activation scale) into eight lanes.
/// </summary>
internal sealed unsafe class Q8_0Tiles<TW> : TileKernel where TW : struct, IBlock32Weights
{
    public static readonly Q8_0Tiles<TW> Instance = new();

    public override int PackedRowBytes(int cols) => CacheLines((long)cols / 32 * 68);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed)
    {
        int nb = x.Length / 32;
        if (packed.Length < nb * 68) throw new ArgumentException("packed row too short");
        fixed (float* xs = x)
        fixed (byte* p = packed)
        {
            sbyte* qs = (sbyte*)p;
            int* sums = (int*)(p + nb * 32);
            float* scales = (float*)(p + nb * 64);
            var ones = Vector256.Create((byte)1);
            for (int b = 0; b < nb; b++)
            {
                scales[b] = QuantMath.ToFloat(Q8_0.QuantizeBlock256(xs + b * 32, qs + b * 32));
                if (AvxVnni.IsSupported)
                    (-AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, ones, Vector256.Load(qs + b * 32))).Store(sums + b * 8);
            }
        }
    }

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols)
    {
        int nb = cols / 32;
        var x = new float[cols];
        fixed (byte* p = packed)
            for (int k = 0; k < cols; k++) x[k] = ((float*)(p + nb * 64))[k / 32] * ((sbyte*)p)[k];
        return x;
    }

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        int nb = cols / 32;
        // Decode is bound by reading the weights: one row at a time, each block's scale read where
        // it lies, streams the matrix once, where four rows side by side after a strided pass for
        // their scales left the second thread adding no bandwidth. Same sums as the tile below.
        // Without VNNI the tile shares nothing between activation rows but the weight load (each
        // product needs the weights' signs on that row's activations), so up to four rows (the
        // two-row speculative decode, small batches) also take this path, each weight block's
        // |q| and scales made once for all of them.
        if ((n == 1 || !AvxVnni.IsSupported) && RowByRow<Kernel>(n, w, weightRowBytes, rows, nb, a, packedRowBytes, y, yStride))
            return;
        // The table: each weight tile's half scales as floats, once for every activation tile.
        TiledWithTable<Kernel>(w, weightRowBytes, rows, nb, sizeof(float), a, packedRowBytes, n, y, yStride);
    }

    struct Kernel : ITileBody, IWeightTable, IRowByRow
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            Q8_0Tiles<TW>.Tile<TM, TN>(w, ws, (float*)table, nb, a, aStride, y, yStride);

        public static void Unpack(byte* row, byte* table, int nb)
        {
            float* wd = (float*)table;
            int b = 0;
            for (; b + 8 <= nb; b += 8) QuantMath.Scales8(row + (long)b * TW.BlockBytes, TW.BlockBytes).Store(wd + b);
            for (; b < nb; b++) wd[b] = QuantMath.ToFloat(*(ushort*)(row + (long)b * TW.BlockBytes));
        }

        public static void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent =>
            Direct<TN>(w, ws, rows, nb, a, aStride, y, yStride);
    }

    /// <summary>
    /// TM weight rows × TN activation rows. Accumulator cIJ is weight row I, activation row J;
    /// the extents are constants in each instantiation, so unused rows compile away.
    /// </summary>
    [SkipLocalsInit] // the products are stored before they are read
    static void Tile<TM, TN>(byte* w, long ws, float* wd, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        // The scale products of eight blocks at a time, [(j * 4 + i) * 8 + k] for weight row i,
        // activation row j and block k of the eight: two vector multiplies a block, each then
        // broadcast from memory by its step. Made per step, they had been a quarter of the
        // multiply-pipe work; made per block from scattered scales, a sixth of the instructions.
        // The products are the same floats whichever way they are made.
        float* products = stackalloc float[128];
        Vector256<float> c00 = default, c10 = default, c20 = default, c30 = default;
        Vector256<float> c01 = default, c11 = default, c21 = default, c31 = default;
        Vector256<float> c02 = default, c12 = default, c22 = default, c32 = default;
        Vector256<float> c03 = default, c13 = default, c23 = default, c33 = default;
        float* dx = ActivationScales(a, nb);
        for (int b0 = 0; b0 < nb; b0 += 8)
        {
            int count = Math.Min(8, nb - b0);
            ScaleProducts<TM, TN>(wd + b0, nb, dx + b0, aStride, count, products);
            for (int k = 0; k < count; k++)
            {
                int b = b0 + k;
                byte* wb = w + (long)b * TW.BlockBytes;
                var w0 = LoadForStep(wb);
                var w1 = TM.Value > 1 ? LoadForStep(wb + ws) : default;
                var w2 = TM.Value > 2 ? LoadForStep(wb + 2 * ws) : default;
                var w3 = TM.Value > 3 ? LoadForStep(wb + 3 * ws) : default;
                float* p = products + k;
                Column<TM>(a, b, nb, p, w0, w1, w2, w3, ref c00, ref c10, ref c20, ref c30);
                if (TN.Value > 1) Column<TM>(a + aStride, b, nb, p + 32, w0, w1, w2, w3, ref c01, ref c11, ref c21, ref c31);
                if (TN.Value > 2) Column<TM>(a + 2 * aStride, b, nb, p + 64, w0, w1, w2, w3, ref c02, ref c12, ref c22, ref c32);
                if (TN.Value > 3) Column<TM>(a + 3 * aStride, b, nb, p + 96, w0, w1, w2, w3, ref c03, ref c13, ref c23, ref c33);
            }
        }
        Store<TM>(y, c00, c10, c20, c30);
        if (TN.Value > 1) Store<TM>(y + yStride, c01, c11, c21, c31);
        if (TN.Value > 2) Store<TM>(y + 2 * yStride, c02, c12, c22, c32);
        if (TN.Value > 3) Store<TM>(y + 3 * yStride, c03, c13, c23, c33);
    }

    /// <summary>
    /// Weight scales (the table, from row 0's block at <paramref name="dw"/>) times activation scales
    /// (from row 0's block at <paramref name="dx"/>) for <paramref name="count"/> (≤ 8) blocks, into
    /// <c>products[(j * 4 + i) * 8 + k]</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ScaleProducts<TM, TN>(float* dw, int nb, float* dx, int aStride, int count, float* products)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        if (count == 8)
        {
            ColumnProducts<TM>(dw, nb, Vector256.Load(dx), products);
            if (TN.Value > 1) ColumnProducts<TM>(dw, nb, Vector256.Load((float*)((byte*)dx + aStride)), products + 32);
            if (TN.Value > 2) ColumnProducts<TM>(dw, nb, Vector256.Load((float*)((byte*)dx + 2 * aStride)), products + 64);
            if (TN.Value > 3) ColumnProducts<TM>(dw, nb, Vector256.Load((float*)((byte*)dx + 3 * aStride)), products + 96);
            return;
        }
        for (int j = 0; j < TN.Value; j++)
            for (int i = 0; i < TM.Value; i++)
                for (int k = 0; k < count; k++)
                    products[(j * 4 + i) * 8 + k] = dw[i * nb + k] * ((float*)((byte*)dx + j * aStride))[k];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ColumnProducts<TM>(float* dw, int nb, Vector256<float> dx, float* products) where TM : struct, ITileExtent
    {
        (Vector256.Load(dw) * dx).Store(products);
        if (TM.Value > 1) (Vector256.Load(dw + nb) * dx).Store(products + 8);
        if (TM.Value > 2) (Vector256.Load(dw + 2 * nb) * dx).Store(products + 16);
        if (TM.Value > 3) (Vector256.Load(dw + 3 * nb) * dx).Store(products + 24);
    }

    /// <summary>One activation block against the tile's (up to) four weight blocks, <paramref name="p"/> their scale products (8 floats apart).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Column<TM>(byte* x, int b, int nb, float* p, Vector256<byte> w0, Vector256<byte> w1, Vector256<byte> w2, Vector256<byte> w3,
        ref Vector256<float> c0, ref Vector256<float> c1, ref Vector256<float> c2, ref Vector256<float> c3) where TM : struct, ITileExtent
    {
        var q = Vector256.Load((sbyte*)x + b * 32);
        var offset = AvxVnni.IsSupported ? Vector256.Load((int*)(x + nb * 32) + b * 8) << TW.OffsetShift : default;
        c0 = Step(c0, w0, q, offset, Vector256.Create(p[0]));
        if (TM.Value > 1) c1 = Step(c1, w1, q, offset, Vector256.Create(p[8]));
        if (TM.Value > 2) c2 = Step(c2, w2, q, offset, Vector256.Create(p[16]));
        if (TM.Value > 3) c3 = Step(c3, w3, q, offset, Vector256.Create(p[24]));
    }

    /// <summary>
    /// Each weight row against up to four packed activation rows: exactly <see cref="Tile{TM, TN}"/>'s
    /// arithmetic for each accumulator (F16 to float is exact, so the scale read here equals the
    /// tile's table entry), so a row's result does not depend on how many rows are computed.
    /// The four-product lane sums are the same integers by another route: |q| times x with q's
    /// sign (llama.cpp's trick) instead of (q + offset) times x less the offset's share, so the
    /// activation's plane of sums is not read. That halves the activation bytes each block pulls
    /// into L1 beside the weight stream: Llama's FFN-down rows (8192 values) otherwise read 17 KB
    /// of activation per weight row.
    /// </summary>
    [SkipLocalsInit] // the products are stored before they are read
    static void Direct<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        float* products = stackalloc float[32]; // eight blocks' scale products per activation row
        for (int r = 0; r < rows; r++)
        {
            byte* row = w + r * ws;
            Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
            int b = 0;
            // Eight blocks' scale products in one vector (F16 to float is exact, and lane j's product is
            // the same float as the scalar one), stored and broadcast from memory in turn, a load
            // rather than a lane permute (three µops on Zen 1, which this loop is short of): the
            // scalar conversion per block cost more than the block's integer dot.
            for (; b + 8 <= nb; b += 8)
            {
                var d8 = QuantMath.Scales8(row + (long)b * TW.BlockBytes, TW.BlockBytes);
                (d8 * Vector256.Load(ActivationScales(a, nb) + b)).Store(products);
                if (TN.Value > 1) (d8 * Vector256.Load(ActivationScales(a + aStride, nb) + b)).Store(products + 8);
                if (TN.Value > 2) (d8 * Vector256.Load(ActivationScales(a + 2 * aStride, nb) + b)).Store(products + 16);
                if (TN.Value > 3) (d8 * Vector256.Load(ActivationScales(a + 3 * aStride, nb) + b)).Store(products + 24);
                byte* wb = row + (long)b * TW.BlockBytes;
                byte* xb = a + b * 32;
                PrefetchAhead(wb, 8 * TW.BlockBytes);
                Eight<TN>(wb, xb, aStride, products, 0, ref c0, ref c1, ref c2, ref c3);
                Eight<TN>(wb, xb, aStride, products, 1, ref c0, ref c1, ref c2, ref c3);
                Eight<TN>(wb, xb, aStride, products, 2, ref c0, ref c1, ref c2, ref c3);
                Eight<TN>(wb, xb, aStride, products, 3, ref c0, ref c1, ref c2, ref c3);
                Eight<TN>(wb, xb, aStride, products, 4, ref c0, ref c1, ref c2, ref c3);
                Eight<TN>(wb, xb, aStride, products, 5, ref c0, ref c1, ref c2, ref c3);
                Eight<TN>(wb, xb, aStride, products, 6, ref c0, ref c1, ref c2, ref c3);
                Eight<TN>(wb, xb, aStride, products, 7, ref c0, ref c1, ref c2, ref c3);
            }
            for (; b < nb; b++)
            {
                var q = TW.LoadSigned(row + (long)b * TW.BlockBytes);
                var magnitude = Avx2.Abs(q);
                var d = Vector256.Create(QuantMath.ToFloat(*(ushort*)(row + (long)b * TW.BlockBytes)));
                c0 = SignedBlock(c0, q, magnitude, a, b, d * Vector256.Create(ActivationScales(a, nb)[b]));
                if (TN.Value > 1) c1 = SignedBlock(c1, q, magnitude, a + aStride, b, d * Vector256.Create(ActivationScales(a + aStride, nb)[b]));
                if (TN.Value > 2) c2 = SignedBlock(c2, q, magnitude, a + 2 * aStride, b, d * Vector256.Create(ActivationScales(a + 2 * aStride, nb)[b]));
                if (TN.Value > 3) c3 = SignedBlock(c3, q, magnitude, a + 3 * aStride, b, d * Vector256.Create(ActivationScales(a + 3 * aStride, nb)[b]));
            }
            y[r] = HorizontalSum(c0);
            if (TN.Value > 1) y[yStride + r] = HorizontalSum(c1);
            if (TN.Value > 2) y[2 * yStride + r] = HorizontalSum(c2);
            if (TN.Value > 3) y[3 * yStride + r] = HorizontalSum(c3);
        }
    }

    /// <summary>Block <paramref name="j"/> (a constant at each call, so the loop body is unrolled) of a group of eight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Eight<TN>(byte* wb, byte* xb, int aStride, float* products, int j,
        ref Vector256<float> c0, ref Vector256<float> c1, ref Vector256<float> c2, ref Vector256<float> c3) where TN : struct, ITileExtent
    {
        var q = TW.LoadSigned(wb + j * TW.BlockBytes);
        var magnitude = Avx2.Abs(q);
        c0 = SignedBlock(c0, q, magnitude, xb, j, Vector256.Create(products[j]));
        if (TN.Value > 1) c1 = SignedBlock(c1, q, magnitude, xb + aStride, j, Vector256.Create(products[8 + j]));
        if (TN.Value > 2) c2 = SignedBlock(c2, q, magnitude, xb + 2 * aStride, j, Vector256.Create(products[16 + j]));
        if (TN.Value > 3) c3 = SignedBlock(c3, q, magnitude, xb + 3 * aStride, j, Vector256.Create(products[24 + j]));
    }

    /// <summary>A packed activation row's block scales as floats (plane 3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float* ActivationScales(byte* packedRow, int nb) => (float*)(packedRow + nb * 64);

    /// <summary>
    /// <see cref="Step"/> for one block, the lane sums taken as |q| · (x signed like q): equal to
    /// Step's, since activations are never -128 (Q8_0 rounds to ±127), so negating one cannot wrap.
    /// <paramref name="magnitude"/> is |q|, made once per weight block for all the activation rows
    /// (the JIT did not share it between their calls).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> SignedBlock(Vector256<float> c, Vector256<sbyte> q, Vector256<byte> magnitude, byte* a, int b, Vector256<float> scale)
    {
        var x = Vector256.Load((sbyte*)a + b * 32);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(QuantMath.UnsignedDot(magnitude, Avx2.Sign(x, q))), scale, c);
    }

    /// <summary>A weight block as <see cref="Step"/> takes it: q + offset for VNNI, q itself (as bytes) for AVX2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<byte> LoadForStep(byte* block) => AvxVnni.IsSupported ? TW.Load(block) : TW.LoadSigned(block).AsByte();

    /// <summary>
    /// One block's eight lane sums into the accumulator. VNNI: (q + offset) · x less the offset's
    /// share. Without VNNI, AVX2's u8 × s8 pairs saturate at 16 bits, so offset weights (up to 255)
    /// cannot go in: |q| · (x signed like q) instead, as <see cref="SignedBlock"/>, the same integers,
    /// so the same outputs bit for bit. Where AVX-512 is present the sign goes on by a masked blend
    /// of x and -x rather than <c>vpsignb</c>, which has no EVEX form and so holds its operands to
    /// the first sixteen registers: with it the JIT spilled six of the tile's sixteen accumulators
    /// every block. The mask and |q| (per weight block) and -x (per activation block) are the same
    /// expressions in each of the tile's steps, so the JIT makes each once per block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Step(Vector256<float> acc, Vector256<byte> w, Vector256<sbyte> x, Vector256<int> offset, Vector256<float> scale)
    {
        var q = w.AsSByte();
        var sums = AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(offset, w, x)
            : Avx512BW.VL.IsSupported ? QuantMath.UnsignedDotAvx2(Avx2.Abs(q), Vector256.ConditionalSelect(Vector256.LessThan(q, Vector256<sbyte>.Zero), -x, x))
            : QuantMath.SignedDot(q, x);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scale, acc);
    }

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / 32;
        Span<float> acc = stackalloc float[8];
        acc.Clear();
        fixed (byte* w = weightRow)
        fixed (byte* x = packedRow)
        {
            sbyte* qs = (sbyte*)x;
            float* scales = (float*)(x + nb * 64);
            for (int b = 0; b < nb; b++)
            {
                byte* wb = w + b * TW.BlockBytes;
                float scale = QuantMath.ToFloat(*(ushort*)wb) * scales[b];
                for (int l = 0; l < 8; l++)
                {
                    int sum = 0;
                    for (int k = 4 * l; k < 4 * l + 4; k++) sum += TW.Value(wb, k) * qs[b * 32 + k];
                    acc[l] = MathF.FusedMultiplyAdd(sum, scale, acc[l]);
                }
            }
        }
        return HorizontalSum(acc);
    }
}
