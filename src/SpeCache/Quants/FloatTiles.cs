using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>How the float tile reads a weight row's values into float lanes: floats, or 16-bit floats converted as they load.</summary>
internal unsafe interface IFloatLanes
{
    /// <summary>Bytes per weight.</summary>
    static abstract int Bytes { get; }

    /// <summary>Whether the rows stream from memory (the weights in place), so the tile prefetches the next tile's rows, rather than sit in cache (a table).</summary>
    static abstract bool Streams { get; }

    static abstract Vector512<float> Load16(byte* row, int i);

    static abstract Vector256<float> Load8(byte* row, int i);

    static abstract float At(byte* row, int i);
}

/// <summary>Floats in cache: a table of converted weights, or a lone row.</summary>
internal readonly unsafe struct FloatLanes : IFloatLanes
{
    public static int Bytes => sizeof(float);

    public static bool Streams => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int i) => Vector512.Load((float*)row + i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int i) => Vector256.Load((float*)row + i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => ((float*)row)[i];
}

/// <summary>F32 weights where they lie, streaming from memory (decode).</summary>
internal readonly unsafe struct StreamedFloatLanes : IFloatLanes
{
    public static int Bytes => sizeof(float);

    public static bool Streams => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int i) => FloatLanes.Load16(row, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int i) => FloatLanes.Load8(row, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => FloatLanes.At(row, i);
}

/// <summary>16-bit float weights read by <typeparamref name="T"/>, as the row dots read them.</summary>
internal readonly unsafe struct HalfLanes<T> : IFloatLanes where T : struct, IHalfReader
{
    public static int Bytes => sizeof(ushort);

    public static bool Streams => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int i) => T.Load16((ushort*)row + i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int i) => T.Load8((ushort*)row + i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => T.ToFloat(((ushort*)row)[i]);
}

/// <summary>
/// What the float kernels share: activations kept as floats (packing is a copy), and a few rows
/// (decode, the two-row speculative decode) dotted with the weights read in place, four weight
/// rows at a time so that each activation load serves four of them.
/// </summary>
internal abstract unsafe class FloatActivationTiles : TileKernel
{
    /// <summary>
    /// Most activation rows dotted with the weights in place (four at a time, the weight tile read
    /// from L1 or L2 after the first four); more convert each weight tile once
    /// (<see cref="HalfTiles{T}"/>). One weight row at a time (the row dots) had read the
    /// activations once per weight row: past 8192 columns they no longer fit in L1 beside the
    /// weights, and F16 decode of a 2048 x 8192 matrix (Llama-3.2-1B's FFN down) ran at 10 GB/s a
    /// thread against 26 for 8192 x 2048 (MatMulBench 1 F16 nomem 2048x8192). Sixteen, not four:
    /// 8 rows went 77-85 -> 109-110 GOPS for F16 and 73-81 -> 131-133 for BF16 (MatMulBench gemm,
    /// two threads), 16 rows no slower; at 64 the table is faster (154 against 115 for F16).
    /// </summary>
    public const int InPlaceRows = 16;

    public override int PackedRowBytes(int cols) => CacheLines((long)cols * sizeof(float));

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => x.CopyTo(MemoryMarshal.Cast<byte, float>(packed));

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => MemoryMarshal.Cast<byte, float>(packed)[..cols].ToArray();

    /// <summary>The float tile over the weight rows four at a time, each weight read by <typeparamref name="TL"/> where it lies.</summary>
    protected static void InPlace<TL>(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
        where TL : struct, IFloatLanes
    {
        for (int r0 = 0; r0 < rows; r0 += 4)
            Tiles<InPlaceBody<TL>>(Math.Min(4, rows - r0), n, w + r0 * weightRowBytes, weightRowBytes, null, cols, a, packedRowBytes, y + r0, yStride);
    }

    struct InPlaceBody<TL> : ITileBody where TL : struct, IFloatLanes
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int cols, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            FloatTile.Rows<TL, TM, TN>(w, ws, cols, (float*)a, aStride / sizeof(float), y, yStride);
    }
}

/// <summary>
/// Matrix products of 16-bit float weights (F16, BF16) with float activations. Up to
/// <see cref="FloatActivationTiles.InPlaceRows"/> activation rows (decode, small batches) are
/// dotted with four weight rows at a time, each half converted as it is loaded. More rows (prefill)
/// convert each weight tile of four rows to floats once, into a table that every activation tile
/// passing over it reads. Either way the tile multiplies four weight rows by four activation rows
/// at a time from registers, and per output the operations are <see cref="HalfRows.Dot512{T}"/>'s
/// (one accumulator over 16 columns a step, each product rounded before it is added, the lane sum,
/// the rest one by one), so the outputs are the row dots' bits and a row's result does not depend
/// on how many rows come with it. The row dots had read every weight once per pair of
/// activation rows, converting it each time (F16 to float is bit moves in .NET 10, which has no
/// F16C). On AVX2 CPUs the in-place tile takes one activation row at a time against the four weight
/// rows (<see cref="HalfRows.Dot256{T}"/>'s operations), and more rows the two-row dots.
/// </summary>
internal sealed unsafe class HalfTiles<T> : FloatActivationTiles where T : struct, IHalfReader
{
    public static readonly HalfTiles<T> Instance = new();

    /// <summary>
    /// AVX-512, or AVX2 and FMA. On AVX2 more than <see cref="FloatActivationTiles.InPlaceRows"/>
    /// rows take the two-row dots instead of the table: measured with AVX-512 hidden on a Zen 4
    /// (MatMulBench gemm, 512 rows, two threads), a 256-bit table tile gave F16 73-77 and BF16
    /// 71-73 GOPS against the two-row dots' 83-85 and 80.
    /// </summary>
    public static readonly bool Supported = Vector512.IsHardwareAccelerated || TileKernel.IsSupported;

    /// <remarks>The table: each weight tile's rows as floats ("blocks" of one value, four bytes each).</remarks>
    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        if (n <= InPlaceRows) InPlace<HalfLanes<T>>(w, weightRowBytes, rows, a, packedRowBytes, n, cols, y, yStride);
        else if (Vector512.IsHardwareAccelerated) TiledWithTable<Kernel>(w, weightRowBytes, rows, cols, sizeof(float), a, packedRowBytes, n, y, yStride);
        else RowPairs(w, weightRowBytes, rows, a, packedRowBytes, n, cols, y, yStride);
    }

    /// <summary>Each weight row against the activation rows two at a time (<see cref="HalfRows.Dot2_256{T}"/>, each output <see cref="HalfRows.Dot256{T}"/>'s bits).</summary>
    static void RowPairs(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        for (int r = 0; r < rows; r++)
        {
            var weights = new ReadOnlySpan<byte>(w + r * weightRowBytes, cols * sizeof(ushort));
            int i = 0;
            for (; i + 1 < n; i += 2)
            {
                HalfRows.Dot2_256<T>(weights, new ReadOnlySpan<byte>(a + (long)i * packedRowBytes, packedRowBytes),
                    new ReadOnlySpan<byte>(a + (long)(i + 1) * packedRowBytes, packedRowBytes), cols, out float y0, out float y1);
                y[i * yStride + r] = y0;
                y[(i + 1) * yStride + r] = y1;
            }
            if (i < n) y[i * yStride + r] = HalfRows.Dot256<T>(weights, new ReadOnlySpan<byte>(a + (long)i * packedRowBytes, packedRowBytes), cols);
        }
    }

    /// <summary>
    /// Activations times 2^112 where the weights are read by <see cref="ScaledHalves"/> (2^-112
    /// times their value), so each product is the unscaled one's float; the backend takes that
    /// kernel only where <see cref="F16.TakesScaledTile"/>.
    /// </summary>
    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed)
    {
        if (typeof(T) == typeof(ScaledHalves)) TensorPrimitives.Multiply(x, QuantMath.HalfRebias, MemoryMarshal.Cast<byte, float>(packed)[..x.Length]);
        else base.Pack(x, packed);
    }

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols)
    {
        var values = base.UnpackActivation(packed, cols);
        if (typeof(T) == typeof(ScaledHalves)) TensorPrimitives.Divide(values, QuantMath.HalfRebias, values);
        return values;
    }

    struct Kernel : ITileBody, IWeightTable
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int cols, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            FloatTile.Rows<FloatLanes, TM, TN>(table, (long)cols * sizeof(float), cols, (float*)a, aStride / sizeof(float), y, yStride);

        public static void Unpack(byte* row, byte* table, int cols)
        {
            ushort* h = (ushort*)row;
            float* f = (float*)table;
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
                for (; i + 16 <= cols; i += 16) T.Load16(h + i).Store(f + i);
            for (; i + 8 <= cols; i += 8) T.Load8(h + i).Store(f + i);
            for (; i < cols; i++) f[i] = T.ToFloat(h[i]);
        }
    }

    /// <summary>The row dot the tile reproduces bit for bit (itself tested against the scalar dot).</summary>
    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols) =>
        Vector512.IsHardwareAccelerated ? HalfRows.Dot512<T>(weightRow, packedRow, cols) : HalfRows.Dot256<T>(weightRow, packedRow, cols);
}

/// <summary>
/// Matrix products of F32 weights with any number of activation rows, on 512-bit registers or (AVX2
/// and FMA) 256-bit ones: the weights are floats already, so the tile reads them in place, four
/// rows at a time, while the activation tiles pass over them. Every output is
/// <see cref="RowDot"/>'s operations, the format's row dot on these CPUs, so the outputs do not
/// depend on the row count. The row dots (<c>TensorPrimitives.Dot</c> before) read each weight once
/// per activation row: MatMulBench gemm, 512 rows, two threads on a Zen 4, 66-67 -> 104-109 GOPS,
/// and with AVX-512 hidden 42 -> 85-89.
/// </summary>
internal sealed unsafe class F32Tiles : FloatActivationTiles
{
    public static readonly F32Tiles Instance = new();

    public static readonly bool Supported = FloatTile.Supported;

    /// <summary>F32's row dot where this kernel runs (the format's <see cref="TypeTraits.Dot"/>, and the reference its outputs are tested against): the tile for one output.</summary>
    public static float RowDot(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        if (w.Length < cols * 4 || x.Length < cols * 4) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
            return FloatTile.Dot((float*)pw, (float*)px, cols);
    }

    /// <remarks>More rows than <see cref="FloatActivationTiles.InPlaceRows"/> read each weight tile once per four activation rows, from cache after the first: no prefetch.</remarks>
    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        if (n <= InPlaceRows) InPlace<StreamedFloatLanes>(w, weightRowBytes, rows, a, packedRowBytes, n, cols, y, yStride);
        else InPlace<FloatLanes>(w, weightRowBytes, rows, a, packedRowBytes, n, cols, y, yStride);
    }

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols) => RowDot(weightRow, packedRow, cols);
}

/// <summary>
/// The float tile of <see cref="HalfTiles{T}"/> and <see cref="F32Tiles"/>: up to four weight rows
/// of floats by up to four activation rows, one accumulator per output (16 accumulators, with four
/// activation vectors and one weight vector loaded at a time, within AVX-512's 32 registers). Per
/// output the operations of <see cref="HalfRows.Dot512{T}"/>: one accumulator over 16 columns a
/// step, each product rounded before it is added, the lane sum, the rest one by one. Each step
/// loads four weight and four activation vectors for 16 products; the earlier four-by-two tile,
/// two accumulators per output, loaded 12 for 16 and read L2 for most of them (its table of four
/// weight rows fills L1 at 2048 columns): MatMulBench rowdot, 64 rows, 8192 x 2048, one thread's
/// CPU time, BF16 52-62 -> 82-86 GOPS, F32 56-57 -> 84-85.
/// </summary>
internal static unsafe class FloatTile
{
    /// <summary>AVX-512, or AVX2 and FMA (<see cref="Rows256{TL, TM}"/>).</summary>
    public static readonly bool Supported = Vector512.IsHardwareAccelerated || TileKernel.IsSupported;

    /// <summary>TM weight rows (<paramref name="ws"/> bytes apart, read by <typeparamref name="TL"/>) × TN activation rows (<paramref name="xStride"/> floats apart), outputs at <c>y[j * yStride + i]</c>.</summary>
    public static void Rows<TL, TM, TN>(byte* w, long ws, int cols, float* x, int xStride, float* y, long yStride)
        where TL : struct, IFloatLanes where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            for (int j = 0; j < TN.Value; j++) Rows256<TL, TM>(w, ws, cols, x + j * xStride, y + j * yStride);
            return;
        }
        Tile<TL, TM, TN>(w, ws, cols, x, xStride, y, yStride);
    }

    /// <summary>One row's dot: the tile with one weight row and one activation row.</summary>
    public static float Dot(float* w, float* x, int cols)
    {
        float y;
        Rows<FloatLanes, Extent1, Extent1>((byte*)w, 0, cols, x, 0, &y, 0);
        return y;
    }

    /// <summary>
    /// AVX2 and FMA: TM weight rows against one activation row, per output
    /// <see cref="HalfRows.Dot256{T}"/>'s operations (two accumulators over 16 columns a step by
    /// multiply-adds, then 8, the lane sum, the rest one by one). One activation row at a time
    /// keeps the eight accumulators and the loads within AVX2's 16 registers.
    /// </summary>
    [SkipLocalsInit]
    static void Rows256<TL, TM>(byte* w, long ws, int cols, float* x, float* y) where TL : struct, IFloatLanes where TM : struct, ITileExtent
    {
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
        int i = 0;
        for (; i + 16 <= cols; i += 16)
        {
            if (TL.Streams) PrefetchNextTile<TL, TM>(w, ws, i, 16);
            var p0 = Vector256.Load(x + i);
            var p1 = Vector256.Load(x + i + 8);
            a00 = Vector256.FusedMultiplyAdd(TL.Load8(w, i), p0, a00);
            a01 = Vector256.FusedMultiplyAdd(TL.Load8(w, i + 8), p1, a01);
            if (TM.Value > 1)
            {
                a10 = Vector256.FusedMultiplyAdd(TL.Load8(w + ws, i), p0, a10);
                a11 = Vector256.FusedMultiplyAdd(TL.Load8(w + ws, i + 8), p1, a11);
            }
            if (TM.Value > 2)
            {
                a20 = Vector256.FusedMultiplyAdd(TL.Load8(w + 2 * ws, i), p0, a20);
                a21 = Vector256.FusedMultiplyAdd(TL.Load8(w + 2 * ws, i + 8), p1, a21);
            }
            if (TM.Value > 3)
            {
                a30 = Vector256.FusedMultiplyAdd(TL.Load8(w + 3 * ws, i), p0, a30);
                a31 = Vector256.FusedMultiplyAdd(TL.Load8(w + 3 * ws, i + 8), p1, a31);
            }
        }
        if (i + 8 <= cols)
        {
            var p0 = Vector256.Load(x + i);
            a00 = Vector256.FusedMultiplyAdd(TL.Load8(w, i), p0, a00);
            if (TM.Value > 1) a10 = Vector256.FusedMultiplyAdd(TL.Load8(w + ws, i), p0, a10);
            if (TM.Value > 2) a20 = Vector256.FusedMultiplyAdd(TL.Load8(w + 2 * ws, i), p0, a20);
            if (TM.Value > 3) a30 = Vector256.FusedMultiplyAdd(TL.Load8(w + 3 * ws, i), p0, a30);
            i += 8;
        }
        y[0] = Finish256<TL>(w, x, i, cols, a00, a01);
        if (TM.Value > 1) y[1] = Finish256<TL>(w + ws, x, i, cols, a10, a11);
        if (TM.Value > 2) y[2] = Finish256<TL>(w + 2 * ws, x, i, cols, a20, a21);
        if (TM.Value > 3) y[3] = Finish256<TL>(w + 3 * ws, x, i, cols, a30, a31);
    }

    /// <summary>
    /// Asks for the next tile's rows (the TM rows after these), at the columns [i, i + count), into
    /// L2. Four rows read at once are four short streams (a row of 2048 halves is one 4 KB page),
    /// which the hardware prefetcher learns anew at each tile: without this the four-row decode read
    /// an 8192 x 2048 F16 matrix at 24 GB/s on two threads against one row at a time's 35, with it
    /// 38-40 (MatMulBench 1 F16 nomem 8192x2048, Zen 4). Into L1 measured slower (27), and two tiles
    /// ahead no better than one. A prefetch past the weights is harmless: it never faults.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchNextTile<TL, TM>(byte* w, long ws, int i, int count) where TL : struct, IFloatLanes where TM : struct, ITileExtent
    {
        if (!Sse.IsSupported) return;
        byte* next = w + TM.Value * ws + (long)i * TL.Bytes;
        for (int k = 0; k < TM.Value; k++)
            for (int b = 0; b < count * TL.Bytes; b += 64) Sse.Prefetch1(next + k * ws + b);
    }

    /// <summary>The lane sum and the columns from <paramref name="i"/> on, as <see cref="HalfRows.Dot256{T}"/> ends.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Finish256<TL>(byte* w, float* x, int i, int cols, Vector256<float> acc0, Vector256<float> acc1) where TL : struct, IFloatLanes
    {
        float sum = Vector256.Sum(acc0 + acc1);
        for (; i < cols; i++) sum += TL.At(w, i) * x[i];
        return sum;
    }

    /// <summary>TM weight rows (<paramref name="ws"/> bytes apart) × TN activation rows, one accumulator per output.</summary>
    [SkipLocalsInit]
    static void Tile<TL, TM, TN>(byte* w, long ws, int cols, float* x, int xStride, float* y, long yStride)
        where TL : struct, IFloatLanes where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
        float* x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        int i = 0;
        for (; i + 16 <= cols; i += 16)
        {
            if (TL.Streams && (i & 31) == 0) PrefetchNextTile<TL, TM>(w, ws, i, 32);
            var p0 = Vector512.Load(x + i);
            var p1 = TN.Value > 1 ? Vector512.Load(x1 + i) : default;
            var p2 = TN.Value > 2 ? Vector512.Load(x2 + i) : default;
            var p3 = TN.Value > 3 ? Vector512.Load(x3 + i) : default;
            Step(TL.Load16(w, i), p0, p1, p2, p3, ref a00, ref a01, ref a02, ref a03);
            if (TM.Value > 1) Step(TL.Load16(w + ws, i), p0, p1, p2, p3, ref a10, ref a11, ref a12, ref a13);
            if (TM.Value > 2) Step(TL.Load16(w + 2 * ws, i), p0, p1, p2, p3, ref a20, ref a21, ref a22, ref a23);
            if (TM.Value > 3) Step(TL.Load16(w + 3 * ws, i), p0, p1, p2, p3, ref a30, ref a31, ref a32, ref a33);

            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            static void Step(Vector512<float> wr, Vector512<float> p0, Vector512<float> p1, Vector512<float> p2, Vector512<float> p3,
                ref Vector512<float> c0, ref Vector512<float> c1, ref Vector512<float> c2, ref Vector512<float> c3)
            {
                c0 += wr * p0;
                if (TN.Value > 1) c1 += wr * p1;
                if (TN.Value > 2) c2 += wr * p2;
                if (TN.Value > 3) c3 += wr * p3;
            }
        }
        Store<TL, TN>(w, x, xStride, i, cols, y, yStride, a00, a01, a02, a03);
        if (TM.Value > 1) Store<TL, TN>(w + ws, x, xStride, i, cols, y + 1, yStride, a10, a11, a12, a13);
        if (TM.Value > 2) Store<TL, TN>(w + 2 * ws, x, xStride, i, cols, y + 2, yStride, a20, a21, a22, a23);
        if (TM.Value > 3) Store<TL, TN>(w + 3 * ws, x, xStride, i, cols, y + 3, yStride, a30, a31, a32, a33);
    }

    /// <summary>One weight row's outputs for the TN activation rows, each finished from its accumulator.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store<TL, TN>(byte* w, float* x, int xStride, int i, int cols, float* y, long yStride,
        Vector512<float> c0, Vector512<float> c1, Vector512<float> c2, Vector512<float> c3)
        where TL : struct, IFloatLanes where TN : struct, ITileExtent
    {
        y[0] = Finish<TL>(w, x, i, cols, c0);
        if (TN.Value > 1) y[yStride] = Finish<TL>(w, x + xStride, i, cols, c1);
        if (TN.Value > 2) y[2 * yStride] = Finish<TL>(w, x + 2 * xStride, i, cols, c2);
        if (TN.Value > 3) y[3 * yStride] = Finish<TL>(w, x + 3 * xStride, i, cols, c3);
    }

    /// <summary>The lane sum and the columns from <paramref name="i"/> on, as <see cref="HalfRows.Dot512{T}"/> ends.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Finish<TL>(byte* w, float* x, int i, int cols, Vector512<float> acc) where TL : struct, IFloatLanes
    {
        float sum = Vector512.Sum(acc);
        for (; i < cols; i++) sum += TL.At(w, i) * x[i];
        return sum;
    }
}
