using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// A register-tiled matrix multiply for one weight format: up to four weight rows times up to
/// four activation rows are accumulated in registers across the whole row, so each weight block
/// is loaded and decoded once per tile instead of once per activation row (llamafile's tinyBLAS
/// does the same in C++). Activations are first packed into a layout of the kernel's choosing.
/// <para>
/// Every output is computed by the same sequence of operations whatever the tile, the number of
/// activation rows or the thread split: lane-wise exact integer partial sums per block, one
/// float multiply-add per block and lane, and <see cref="HorizontalSum"/> at the end. So a
/// sequence's logits do not depend on which other rows share its matmul (one-row decode,
/// two-row speculative decode, batched decode and prefill all agree), and
/// <see cref="ReferenceDot"/> reproduces each output bit for bit in scalar code.
/// </para>
/// </summary>
internal abstract unsafe class TileKernel
{
    /// <summary>
    /// The Q8_0 and Q4_0 tiles run on AVX2 and FMA, their integer dots by 256-bit VNNI (AVX-VNNI,
    /// the only VNNI .NET 10 exposes short of AVX10) where the CPU has it, else by AVX2's multiply-add
    /// pairs; other CPUs take the row dots. The 512-bit K-quant tiles need AVX512-BW besides, and no
    /// VNNI (their pair sums are AVX512-BW multiply-add pairs); Q4_0's pair kernel needs AVX-512's
    /// 32 registers (<see cref="Q4_0Tiles"/>).
    /// </summary>
    public static readonly bool IsSupported = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Bytes of one packed activation row of <paramref name="cols"/> values (a multiple of 64, so rows stay aligned).</summary>
    public abstract int PackedRowBytes(int cols);

    /// <summary>Quantizes one float activation row into the kernel's packed layout.</summary>
    public abstract void Pack(ReadOnlySpan<float> x, Span<byte> packed);

    /// <summary><see cref="Pack"/> as a delegate made once: a method group converted at each call allocates, once per matmul.</summary>
    public QuantizeRowFn PackRow => _packRow ??= Pack;
    QuantizeRowFn? _packRow;

    /// <summary>The values a packed row stands for (scale × quant), for tests.</summary>
    public abstract float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols);

    /// <summary>
    /// <c>y[i * yStride + r] = dot(W[r], a[i])</c> for <paramref name="rows"/> weight rows
    /// starting at <paramref name="w"/> (<paramref name="weightRowBytes"/> apart) and
    /// <paramref name="n"/> packed activation rows starting at <paramref name="a"/>.
    /// </summary>
    public abstract void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride);

    /// <summary>One output in scalar code, with exactly the kernel's arithmetic (tests compare bits).</summary>
    public abstract float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols);

    /// <summary>
    /// How far ahead of the block being read the row-at-a-time kernels (decode) prefetch their
    /// weight stream. The hardware prefetcher alone left one Q8_0 decode thread at 9.1-9.5 GB/s on
    /// an AVX2-only EPYC, 11 GB/s with this (MatMulBench 1 Q8_0; 512 to 4096 bytes ahead all gained,
    /// 2 to 3 KB the most): the loop waits on memory, not on its multiply-adds.
    /// </summary>
    public const int PrefetchDistance = 2048;

    /// <summary>
    /// Prefetches the weight bytes <see cref="PrefetchDistance"/> past [<paramref name="at"/>,
    /// at + <paramref name="bytes"/>): a call per block (or group of blocks) read in order covers every
    /// cache line of the stream, since no two of its prefetches are more than a line apart.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PrefetchAhead(byte* at, int bytes)
    {
        if (!Sse.IsSupported) return;
        byte* ahead = at + PrefetchDistance;
        for (int i = 0; i < bytes; i += 64) Sse.Prefetch0(ahead + i);
    }

    /// <summary>
    /// The fixed reduction of eight lanes: (l0+l4 + l2+l6) + (l1+l5 + l3+l7). Written out rather
    /// than <c>Vector256.Sum</c>, whose order is not specified, so the scalar reference can mirror it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalSum(Vector256<float> v) => HorizontalSum(v.GetLower() + v.GetUpper());

    /// <summary>The fixed reduction of four lanes: (l0+l2) + (l1+l3), the last two steps of the eight-lane one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalSum(Vector128<float> v)
    {
        var t = v + Vector128.Shuffle(v, Vector128.Create(2, 3, 0, 1));
        return t.ToScalar() + t.GetElement(1);
    }

    /// <summary>A 256-bit tile's outputs for one activation row: TM weight rows' accumulators, each summed across its lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static void Store<TM>(float* y, Vector256<float> c0, Vector256<float> c1, Vector256<float> c2, Vector256<float> c3) where TM : struct, ITileExtent
    {
        y[0] = HorizontalSum(c0);
        if (TM.Value > 1) y[1] = HorizontalSum(c1);
        if (TM.Value > 2) y[2] = HorizontalSum(c2);
        if (TM.Value > 3) y[3] = HorizontalSum(c3);
    }

    /// <summary>Scalar mirror of <see cref="HorizontalSum(Vector256{float})"/> (eight lanes) or <see cref="HorizontalSum(Vector128{float})"/> (four).</summary>
    public static float HorizontalSum(ReadOnlySpan<float> l) => l.Length switch
    {
        4 => (l[0] + l[2]) + (l[1] + l[3]),
        8 => ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])),
        _ => throw new ArgumentException($"a horizontal sum mirrors four or eight lanes, not {l.Length}", nameof(l)),
    };

    /// <summary>
    /// Runs <typeparamref name="TBody"/>'s tile over <paramref name="m"/> (≤ 4) weight rows and
    /// all <paramref name="n"/> activation rows, four at a time, with the tile shape as type
    /// arguments. <paramref name="table"/> is what the kernel unpacked from the weight tile.
    /// </summary>
    protected static void Tiles<TBody>(int m, int n, byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
        where TBody : ITileBody
    {
        for (int i0 = 0; i0 < n; i0 += 4)
        {
            byte* at = a + (long)i0 * aStride;
            float* yt = y + i0 * yStride;
            switch (Math.Min(4, n - i0))
            {
                case 4: Rows<TBody, Extent4>(m, w, ws, table, nb, at, aStride, yt, yStride); break;
                case 3: Rows<TBody, Extent3>(m, w, ws, table, nb, at, aStride, yt, yStride); break;
                case 2: Rows<TBody, Extent2>(m, w, ws, table, nb, at, aStride, yt, yStride); break;
                default: Rows<TBody, Extent1>(m, w, ws, table, nb, at, aStride, yt, yStride); break;
            }
        }
    }

    static void Rows<TBody, TN>(int m, byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
        where TBody : ITileBody where TN : struct, ITileExtent
    {
        switch (m)
        {
            case 4: TBody.Tile<Extent4, TN>(w, ws, table, nb, a, aStride, y, yStride); break;
            case 3: TBody.Tile<Extent3, TN>(w, ws, table, nb, a, aStride, y, yStride); break;
            case 2: TBody.Tile<Extent2, TN>(w, ws, table, nb, a, aStride, y, yStride); break;
            default: TBody.Tile<Extent1, TN>(w, ws, table, nb, a, aStride, y, yStride); break;
        }
    }

    /// <summary>
    /// Up to four activation rows by <typeparamref name="TRows"/>, which takes the weight rows one
    /// after another (a single stream the hardware prefetcher follows) with each weight block
    /// decoded once for all activation rows; false, computing nothing, for more rows.
    /// </summary>
    protected static bool RowByRow<TRows>(int n, byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride)
        where TRows : IRowByRow
    {
        switch (n)
        {
            case 1: TRows.Rows<Extent1>(w, ws, rows, nb, a, aStride, y, yStride); return true;
            case 2: TRows.Rows<Extent2>(w, ws, rows, nb, a, aStride, y, yStride); return true;
            case 3: TRows.Rows<Extent3>(w, ws, rows, nb, a, aStride, y, yStride); return true;
            case 4: TRows.Rows<Extent4>(w, ws, rows, nb, a, aStride, y, yStride); return true;
            default: return false;
        }
    }

    /// <summary>Weight bytes of one panel in <see cref="RowByRowInPanels{TRows}"/>: half of a Zen 2/3 core's 512 KB L2.</summary>
    const int PanelBytes = 256 * 1024;

    /// <summary>
    /// Any number of activation rows by <typeparamref name="TRows"/>'s few-row path. Up to four take
    /// <see cref="RowByRow{TRows}"/>'s single pass; more go over the weight rows in panels that fit
    /// the L2 cache, each panel against the activation rows four at a time, so the weights come
    /// from memory once and from L2 for the other groups. For kernels whose few-row path decodes a
    /// weight block for four rows faster than building a table and tiling (measured per kernel).
    /// Each output takes the few-row path's operations whatever the row count.
    /// </summary>
    protected static void RowByRowInPanels<TRows>(int n, byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride)
        where TRows : IRowByRow
    {
        if (RowByRow<TRows>(n, w, ws, rows, nb, a, aStride, y, yStride)) return;
        int panel = (int)Math.Max(4, PanelBytes / Math.Max(1, ws));
        for (int r0 = 0; r0 < rows; r0 += panel)
        {
            int m = Math.Min(panel, rows - r0);
            byte* wp = w + r0 * ws;
            for (int i0 = 0; i0 < n; i0 += 4)
                RowByRow<TRows>(Math.Min(4, n - i0), wp, ws, m, nb, a + (long)i0 * aStride, aStride, y + i0 * yStride + r0, yStride);
        }
    }

    /// <summary>Largest table <see cref="TiledWithTable{TKernel}"/> puts on the stack (threads have at least 1.5 MB).</summary>
    const int MaxStackTable = 128 * 1024;

    /// <summary>
    /// <typeparamref name="TKernel"/>'s tiles over the weight rows four at a time, each weight tile
    /// first unpacked into a table (<paramref name="tableBlockBytes"/> per block and row) that every
    /// activation tile passing over it reads.
    /// </summary>
    [SkipLocalsInit] // the table is written before it is read
    protected static void TiledWithTable<TKernel>(byte* w, long ws, int rows, int nb, int tableBlockBytes, byte* a, int aStride, int n, float* y, long yStride)
        where TKernel : ITileBody, IWeightTable
    {
        int tableBytes = 4 * nb * tableBlockBytes;
        byte[]? heap = tableBytes > MaxStackTable ? new byte[tableBytes] : null;
        Span<byte> tableSpan = heap ?? stackalloc byte[tableBytes];
        fixed (byte* table = tableSpan)
            for (int r0 = 0; r0 < rows; r0 += 4)
            {
                int m = Math.Min(4, rows - r0);
                byte* wt = w + r0 * ws;
                for (int i = 0; i < m; i++)
                    TKernel.Unpack(wt + i * ws, table + i * nb * tableBlockBytes, nb);
                Tiles<TKernel>(m, n, wt, ws, table, nb, a, aStride, y + r0, yStride);
            }
    }

    /// <summary>Rounds a packed row size up to whole cache lines.</summary>
    protected static int CacheLines(long bytes) => checked((int)((bytes + 63) & ~63L));
}

/// <summary>A kernel's tile: TM weight rows × TN activation rows, outputs to <c>y[j * yStride + i]</c>.</summary>
internal unsafe interface ITileBody
{
    static abstract void Tile<TM, TN>(byte* w, long ws, byte* table, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent;
}

/// <summary>A kernel's path for a few activation rows: each weight row in turn against all of them, outputs to <c>y[j * yStride + r]</c>.</summary>
internal unsafe interface IRowByRow
{
    static abstract void Rows<TN>(byte* w, long ws, int rows, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent;
}

/// <summary>What a kernel unpacks from one weight row before its tiles run: <paramref name="nb"/> blocks' entries.</summary>
internal unsafe interface IWeightTable
{
    static abstract void Unpack(byte* row, byte* table, int nb);
}

/// <summary>Tile extents as type parameters, so the JIT compiles one specialized, branch-free body per tile shape.</summary>
internal interface ITileExtent
{
    static abstract int Value { get; }
}

internal struct Extent1 : ITileExtent { public static int Value => 1; }
internal struct Extent2 : ITileExtent { public static int Value => 2; }
internal struct Extent3 : ITileExtent { public static int Value => 3; }
internal struct Extent4 : ITileExtent { public static int Value => 4; }
