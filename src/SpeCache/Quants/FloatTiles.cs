using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SpeCache.Quants;

/// <summary>
/// What the float kernels share: activations kept as floats (packing is a copy), and five or more
/// rows, fewer taking the row dots (where reading the weights once is all there is to share).
/// </summary>
internal abstract unsafe class FloatActivationTiles : TileKernel
{
    public override int MinRows => 5;

    public override int PackedRowBytes(int cols) => CacheLines((long)cols * sizeof(float));

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => x.CopyTo(MemoryMarshal.Cast<byte, float>(packed));

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols) => MemoryMarshal.Cast<byte, float>(packed)[..cols].ToArray();
}

/// <summary>
/// Matrix products of 16-bit float weights (F16, BF16) with five or more float activation rows
/// (prefill, batches), on 512-bit registers. Each weight tile of four rows is converted to floats
/// once into a table that every activation tile passing over it reads, and the tile multiplies
/// four weight rows by two activation rows at a time from registers. Per output the operations
/// are <see cref="HalfRows.Dot512{T}"/>'s (two accumulators over 32 columns a step, then 16, each
/// product rounded before it is added, the same lane sum, the rest one by one), so the outputs are
/// the row dots' bits and a row's result does not depend on how many rows come with it. The row
/// dots had read every weight once per pair of activation rows, converting it each time (F16 to
/// float is bit moves in .NET 10, which has no F16C). Fewer rows take the row dots
/// (<see cref="MinRows"/>), where reading the weights once is all there is to share.
/// </summary>
internal sealed unsafe class HalfTiles<T> : FloatActivationTiles where T : struct, IHalfReader
{
    public static readonly HalfTiles<T> Instance = new();

    /// <summary>
    /// AVX-512 only: on AVX2 (measured with AVX-512 hidden on a Zen 4, MatMulBench gemm, 512 rows,
    /// two threads) the 256-bit tile gave F16 73-77 and BF16 71-73 GOPS against the row dots' 83-85
    /// and 80, whose two-row form already reads each weight once per pair of rows.
    /// </summary>
    public static readonly bool Supported = Vector512.IsHardwareAccelerated;

    /// <remarks>The table: each weight tile's rows as floats ("blocks" of one value, four bytes each).</remarks>
    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride) =>
        TiledWithTable<Kernel>(w, weightRowBytes, rows, cols, sizeof(float), a, packedRowBytes, n, y, yStride);

    struct Kernel : ITileBody, IWeightTable
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int cols, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            FloatTile.Rows<TM, TN>((float*)table, cols, cols, (float*)a, aStride / sizeof(float), y, yStride);

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
/// Matrix products of F32 weights with five or more activation rows, on 512-bit registers or (AVX2
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

    /// <summary>F32's row dot where this kernel runs (a row alone, and the decode's rows): the tile's operations for one output.</summary>
    public static float RowDot(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols)
    {
        if (w.Length < cols * 4 || x.Length < cols * 4) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
            return FloatTile.Dot((float*)pw, (float*)px, cols);
    }

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        for (int r0 = 0; r0 < rows; r0 += 4)
            Tiles<Kernel>(Math.Min(4, rows - r0), n, w + r0 * weightRowBytes, weightRowBytes, null, cols, a, packedRowBytes, y + r0, yStride);
    }

    struct Kernel : ITileBody
    {
        public static void Tile<TM, TN>(byte* w, long ws, byte* table, int cols, byte* a, int aStride, float* y, long yStride)
            where TM : struct, ITileExtent where TN : struct, ITileExtent =>
            FloatTile.Rows<TM, TN>((float*)w, ws / sizeof(float), cols, (float*)a, aStride / sizeof(float), y, yStride);
    }

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols) => RowDot(weightRow, packedRow, cols);
}

/// <summary>
/// The float tile of <see cref="HalfTiles{T}"/> and <see cref="F32Tiles"/>: up to four weight rows
/// of floats by up to four activation rows, two activation rows at a time (four weight rows by two
/// activation rows is 16 accumulators, each output having two, which with the loaded weights and
/// activations fills the registers). Per output the operations of <see cref="HalfRows.Dot512{T}"/>:
/// two accumulators over 32 columns a step, then 16, each product rounded before it is added, the
/// lane sum, the rest one by one.
/// </summary>
internal static unsafe class FloatTile
{
    /// <summary>AVX-512, or AVX2 and FMA (<see cref="Rows256{TM}"/>).</summary>
    public static readonly bool Supported = Vector512.IsHardwareAccelerated || TileKernel.IsSupported;

    /// <summary>TM weight rows (<paramref name="ws"/> floats apart) × TN activation rows (<paramref name="xStride"/> floats apart), outputs at <c>y[j * yStride + i]</c>.</summary>
    public static void Rows<TM, TN>(float* w, long ws, int cols, float* x, int xStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            for (int j = 0; j < TN.Value; j++) Rows256<TM>(w, ws, cols, x + j * xStride, y + j * yStride);
            return;
        }
        if (TN.Value == 1) Pair<TM, Extent1>(w, ws, cols, x, xStride, y, yStride);
        else Pair<TM, Extent2>(w, ws, cols, x, xStride, y, yStride);
        if (TN.Value == 3) Pair<TM, Extent1>(w, ws, cols, x + 2 * xStride, xStride, y + 2 * yStride, yStride);
        if (TN.Value == 4) Pair<TM, Extent2>(w, ws, cols, x + 2 * xStride, xStride, y + 2 * yStride, yStride);
    }

    /// <summary>
    /// One row's dot by the tile's operations (what a row alone gets), 64 columns a step: the same
    /// products added into the same two accumulators in the same order.
    /// </summary>
    public static float Dot(float* w, float* x, int cols)
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            float y;
            Rows256<Extent1>(w, 0, cols, x, &y);
            return y;
        }
        Vector512<float> acc0 = default, acc1 = default;
        int i = 0;
        for (; i + 64 <= cols; i += 64)
        {
            var p0 = Vector512.Load(w + i) * Vector512.Load(x + i);
            var p1 = Vector512.Load(w + i + 16) * Vector512.Load(x + i + 16);
            var p2 = Vector512.Load(w + i + 32) * Vector512.Load(x + i + 32);
            var p3 = Vector512.Load(w + i + 48) * Vector512.Load(x + i + 48);
            acc0 = acc0 + p0 + p2;
            acc1 = acc1 + p1 + p3;
        }
        for (; i + 32 <= cols; i += 32)
        {
            acc0 += Vector512.Load(w + i) * Vector512.Load(x + i);
            acc1 += Vector512.Load(w + i + 16) * Vector512.Load(x + i + 16);
        }
        if (i + 16 <= cols)
        {
            acc0 += Vector512.Load(w + i) * Vector512.Load(x + i);
            i += 16;
        }
        return Finish(w, x, i, cols, acc0, acc1);
    }

    /// <summary>
    /// AVX2 and FMA: TM weight rows against one activation row, per output
    /// <see cref="HalfRows.Dot256{T}"/>'s operations (two accumulators over 16 columns a step by
    /// multiply-adds, then 8, the lane sum, the rest one by one). One activation row at a time
    /// keeps the eight accumulators and the loads within AVX2's 16 registers.
    /// </summary>
    [SkipLocalsInit]
    static void Rows256<TM>(float* w, long ws, int cols, float* x, float* y) where TM : struct, ITileExtent
    {
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
        int i = 0;
        for (; i + 16 <= cols; i += 16)
        {
            var p0 = Vector256.Load(x + i);
            var p1 = Vector256.Load(x + i + 8);
            a00 = Vector256.FusedMultiplyAdd(Vector256.Load(w + i), p0, a00);
            a01 = Vector256.FusedMultiplyAdd(Vector256.Load(w + i + 8), p1, a01);
            if (TM.Value > 1)
            {
                a10 = Vector256.FusedMultiplyAdd(Vector256.Load(w + ws + i), p0, a10);
                a11 = Vector256.FusedMultiplyAdd(Vector256.Load(w + ws + i + 8), p1, a11);
            }
            if (TM.Value > 2)
            {
                a20 = Vector256.FusedMultiplyAdd(Vector256.Load(w + 2 * ws + i), p0, a20);
                a21 = Vector256.FusedMultiplyAdd(Vector256.Load(w + 2 * ws + i + 8), p1, a21);
            }
            if (TM.Value > 3)
            {
                a30 = Vector256.FusedMultiplyAdd(Vector256.Load(w + 3 * ws + i), p0, a30);
                a31 = Vector256.FusedMultiplyAdd(Vector256.Load(w + 3 * ws + i + 8), p1, a31);
            }
        }
        if (i + 8 <= cols)
        {
            var p0 = Vector256.Load(x + i);
            a00 = Vector256.FusedMultiplyAdd(Vector256.Load(w + i), p0, a00);
            if (TM.Value > 1) a10 = Vector256.FusedMultiplyAdd(Vector256.Load(w + ws + i), p0, a10);
            if (TM.Value > 2) a20 = Vector256.FusedMultiplyAdd(Vector256.Load(w + 2 * ws + i), p0, a20);
            if (TM.Value > 3) a30 = Vector256.FusedMultiplyAdd(Vector256.Load(w + 3 * ws + i), p0, a30);
            i += 8;
        }
        y[0] = Finish256(w, x, i, cols, a00, a01);
        if (TM.Value > 1) y[1] = Finish256(w + ws, x, i, cols, a10, a11);
        if (TM.Value > 2) y[2] = Finish256(w + 2 * ws, x, i, cols, a20, a21);
        if (TM.Value > 3) y[3] = Finish256(w + 3 * ws, x, i, cols, a30, a31);
    }

    /// <summary>The lane sum and the columns from <paramref name="i"/> on, as <see cref="HalfRows.Dot256{T}"/> ends.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Finish256(float* w, float* x, int i, int cols, Vector256<float> acc0, Vector256<float> acc1)
    {
        float sum = Vector256.Sum(acc0 + acc1);
        for (; i < cols; i++) sum += w[i] * x[i];
        return sum;
    }

    /// <summary>TM weight rows (floats, <paramref name="ws"/> apart) × up to two activation rows; TN (1 or 2) says how many.</summary>
    [SkipLocalsInit]
    static void Pair<TM, TN>(float* w, long ws, int cols, float* x, int xStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
        Vector512<float> b00 = default, b01 = default, b10 = default, b11 = default, b20 = default, b21 = default, b30 = default, b31 = default;
        float* x1 = x + xStride;
        int i = 0;
        for (; i + 32 <= cols; i += 32)
        {
            var p0 = Vector512.Load(x + i);
            var p1 = Vector512.Load(x + i + 16);
            var q0 = TN.Value > 1 ? Vector512.Load(x1 + i) : default;
            var q1 = TN.Value > 1 ? Vector512.Load(x1 + i + 16) : default;
            Step(w + i, p0, p1, q0, q1, ref a00, ref a01, ref b00, ref b01);
            if (TM.Value > 1) Step(w + ws + i, p0, p1, q0, q1, ref a10, ref a11, ref b10, ref b11);
            if (TM.Value > 2) Step(w + 2 * ws + i, p0, p1, q0, q1, ref a20, ref a21, ref b20, ref b21);
            if (TM.Value > 3) Step(w + 3 * ws + i, p0, p1, q0, q1, ref a30, ref a31, ref b30, ref b31);

            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            static void Step(float* wr, Vector512<float> p0, Vector512<float> p1, Vector512<float> q0, Vector512<float> q1,
                ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> b0, ref Vector512<float> b1)
            {
                var w0 = Vector512.Load(wr);
                var w1 = Vector512.Load(wr + 16);
                a0 += w0 * p0;
                a1 += w1 * p1;
                if (TN.Value > 1)
                {
                    b0 += w0 * q0;
                    b1 += w1 * q1;
                }
            }
        }
        if (i + 16 <= cols)
        {
            var p0 = Vector512.Load(x + i);
            var q0 = TN.Value > 1 ? Vector512.Load(x1 + i) : default;
            a00 += Vector512.Load(w + i) * p0;
            if (TN.Value > 1) b00 += Vector512.Load(w + i) * q0;
            if (TM.Value > 1) { a10 += Vector512.Load(w + ws + i) * p0; if (TN.Value > 1) b10 += Vector512.Load(w + ws + i) * q0; }
            if (TM.Value > 2) { a20 += Vector512.Load(w + 2 * ws + i) * p0; if (TN.Value > 1) b20 += Vector512.Load(w + 2 * ws + i) * q0; }
            if (TM.Value > 3) { a30 += Vector512.Load(w + 3 * ws + i) * p0; if (TN.Value > 1) b30 += Vector512.Load(w + 3 * ws + i) * q0; }
            i += 16;
        }
        y[0] = Finish(w, x, i, cols, a00, a01);
        if (TM.Value > 1) y[1] = Finish(w + ws, x, i, cols, a10, a11);
        if (TM.Value > 2) y[2] = Finish(w + 2 * ws, x, i, cols, a20, a21);
        if (TM.Value > 3) y[3] = Finish(w + 3 * ws, x, i, cols, a30, a31);
        if (TN.Value > 1)
        {
            y[yStride] = Finish(w, x1, i, cols, b00, b01);
            if (TM.Value > 1) y[yStride + 1] = Finish(w + ws, x1, i, cols, b10, b11);
            if (TM.Value > 2) y[yStride + 2] = Finish(w + 2 * ws, x1, i, cols, b20, b21);
            if (TM.Value > 3) y[yStride + 3] = Finish(w + 3 * ws, x1, i, cols, b30, b31);
        }
    }

    /// <summary>The lane sum and the columns from <paramref name="i"/> on, as <see cref="HalfRows.Dot512{T}"/> ends.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Finish(float* w, float* x, int i, int cols, Vector512<float> acc0, Vector512<float> acc1)
    {
        float sum = Vector512.Sum(acc0 + acc1);
        for (; i < cols; i++) sum += w[i] * x[i];
        return sum;
    }

}
