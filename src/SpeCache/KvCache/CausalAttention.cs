using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace SpeCache.KvCache;

/// <summary>
/// Exact causal attention of several query rows (a prefill chunk) over one KV head's keys and
/// values held as float rows, computed as flash attention computes it: a block of query heads
/// (rows × the GQA group) meets a tile of positions at a time, and the softmax runs online (a
/// running maximum and sum per query head; the partial output is rescaled when the maximum grows),
/// so no row of scores as long as the context is ever written out.
/// </summary>
/// <remarks>
/// Attending row by row reads every key and value of the context once per query row: at a depth
/// of 8K tokens, 4 MB per KV head of a 64-wide head for each row of the chunk, from memory. Here
/// each tile's keys and values are read once, while they sit in L1, for the 64 query heads of a
/// block. The keys are transposed (one row of 64 positions per dimension) once per call, for all
/// blocks, so the score and value kernels keep a 4 × 64 block of results in registers and no dot
/// product ends in a horizontal sum. One instance per thread: it owns its buffers (the transposed
/// keys grow to the longest context seen).
/// </remarks>
public sealed unsafe class CausalAttention
{
    /// <summary>Positions per tile: the transposed keys of a 128-wide head are 32 KB.</summary>
    public const int TilePositions = 64;

    /// <summary>Query heads per block: each tile is read once for this many (rounded up to whole rows).</summary>
    const int QueriesPerBlock = 64;

    /// <summary>Query heads go through the kernels four at a time; a block is padded with empty ones.</summary>
    const int Quad = 4;

    readonly int _d, _group, _rowsPerBlock, _vectorBits;
    readonly float[] _q;      // (block queries, d): the block's query heads times the scale; padding rows stay 0
    float[] _keysT = [];      // per tile of the context: (d, TilePositions), its keys one row per dimension
    readonly float[] _p;      // (block queries, TilePositions): the tile's scores, then its weights
    readonly float[] _out;    // (block queries, d): outputs, not yet divided by the sums
    readonly float[] _max, _sum;

    public CausalAttention(int headDim, int group)
        : this(headDim, group, Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 0)
    {
    }

    /// <param name="vectorBits">The widest vectors the kernels use (512, 256, or 0 for scalar loops); tests run each.</param>
    internal CausalAttention(int headDim, int group, int vectorBits)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(group, 1);
        _d = headDim;
        _group = group;
        _rowsPerBlock = Math.Max(1, QueriesPerBlock / group);
        int queries = RoundUpToQuad(_rowsPerBlock * group);
        // A kernel's vectors run along the head's dimensions, so it needs whole vectors of them.
        _vectorBits = vectorBits switch
        {
            512 when headDim % 16 == 0 => 512,
            512 or 256 when headDim % 8 == 0 => 256,
            _ => 0,
        };
        _q = new float[queries * headDim];
        _p = new float[queries * TilePositions];
        _out = new float[queries * headDim];
        _max = new float[queries];
        _sum = new float[queries];
    }

    /// <summary>The vector width the kernels run at for this head size (0: scalar loops).</summary>
    internal int VectorBits => _vectorBits;

    static int RoundUpToQuad(int n) => (n + Quad - 1) / Quad * Quad;

    /// <summary>
    /// Attends <paramref name="rows"/> query rows, the i-th at position <paramref name="first"/> + i,
    /// each over positions 0 .. first + i.
    /// </summary>
    /// <param name="keys">Position t's key at [t × stride, t × stride + headDim).</param>
    /// <param name="values">Position t's value, laid out as the keys.</param>
    /// <param name="stride">Floats from one position's key (or value) to the next.</param>
    /// <param name="first">The first query row's position (the tokens stored before this chunk).</param>
    /// <param name="queries">Row i's query heads of this KV head (group × headDim) at i × rowStride.</param>
    /// <param name="output">Row i's outputs, laid out as the queries.</param>
    /// <param name="rowStride">Floats from one row's query heads (and outputs) to the next.</param>
    /// <param name="scale">Multiplies every score (1/√headDim).</param>
    public void Attend(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int stride, int first,
        ReadOnlySpan<float> queries, Span<float> output, int rowStride, int rows, float scale)
    {
        if (rows <= 0) return;
        int d = _d, heads = _group * d;
        long positions = first + rows;
        if (stride < d || first < 0 || rowStride < heads
            || keys.Length < (positions - 1) * stride + d || values.Length < (positions - 1) * stride + d
            || queries.Length < (long)(rows - 1) * rowStride + heads || output.Length < (long)(rows - 1) * rowStride + heads)
            throw new ArgumentException($"attention spans too short for {rows} rows after {first} positions (head {d}, group {_group}, strides {stride} and {rowStride})");

        int tiles = (int)((positions + TilePositions - 1) / TilePositions), tileFloats = d * TilePositions;
        if (_keysT.Length < (long)tiles * tileFloats) _keysT = new float[(long)tiles * tileFloats];
        fixed (float* k = keys, v = values)
        fixed (float* q = _q, keysT = _keysT, p = _p, o = _out)
        {
            // Transposed once for every block of rows: per block it cost more than the scores.
            for (int tile = 0; tile < tiles; tile++)
            {
                int t0 = tile * TilePositions;
                TransposeKeys(k + (long)t0 * stride, stride, (int)Math.Min(TilePositions, positions - t0), keysT + (long)tile * tileFloats);
            }
            for (int i0 = 0; i0 < rows; i0 += _rowsPerBlock)
            {
                int blockRows = Math.Min(_rowsPerBlock, rows - i0);
                int live = blockRows * _group, padded = RoundUpToQuad(live);
                for (int i = 0; i < blockRows; i++)
                    TensorPrimitives.Multiply(queries.Slice((i0 + i) * rowStride, heads), scale, _q.AsSpan(i * heads, heads));
                _q.AsSpan(live * d, (padded - live) * d).Clear();
                _out.AsSpan(0, padded * d).Clear();
                _max.AsSpan(0, padded).Fill(float.NegativeInfinity);
                _sum.AsSpan(0, padded).Clear();

                int end = first + i0 + blockRows; // positions the block's last row sees
                for (int t0 = 0; t0 < end; t0 += TilePositions)
                {
                    int n = Math.Min(TilePositions, end - t0);
                    Scores(q, keysT + (long)(t0 / TilePositions) * tileFloats, p, padded);
                    Weigh(p, first + i0 - t0, n, live, padded);
                    AccumulateValues(p, v + (long)t0 * stride, stride, n, o, padded);
                }

                for (int j = 0; j < live; j++)
                    TensorPrimitives.Multiply(_out.AsSpan(j * d, d), 1f / _sum[j],
                        output.Slice((i0 + j / _group) * rowStride + j % _group * d, d));
            }
        }
    }

    /// <summary>The tile's <paramref name="n"/> keys into one row of <see cref="TilePositions"/> per dimension; positions past n are 0.</summary>
    void TransposeKeys(float* keys, int stride, int n, float* kt)
    {
        for (int t = 0; t < n; t++)
        {
            float* key = keys + (long)t * stride;
            for (int i = 0; i < _d; i++) kt[i * TilePositions + t] = key[i];
        }
        if (n < TilePositions)
            for (int i = 0; i < _d; i++) new Span<float>(kt + i * TilePositions + n, TilePositions - n).Clear();
    }

    /// <summary>
    /// Masks what each query head may not see, then folds the tile into its running softmax: the
    /// weights relative to the new maximum replace the scores, the sum and the output so far are
    /// rescaled by how much the maximum grew. <paramref name="lastSeen"/> is the block's first row's
    /// last visible position minus the tile's first, so row r sees tile positions 0 .. lastSeen + r.
    /// </summary>
    void Weigh(float* p, int lastSeen, int n, int live, int padded)
    {
        int d = _d;
        for (int j = 0; j < padded; j++)
        {
            float* row = p + j * TilePositions;
            int seen = j < live ? Math.Min(n, lastSeen + j / _group + 1) : 0;
            if (seen <= 0)
            {
                new Span<float>(row, TilePositions).Clear(); // weighs 0: leaves the row's sum and output as they are
                continue;
            }
            float previous = _max[j], max = Math.Max(previous, RowMax(row, seen));
            if (max > previous)
            {
                // The output so far weighed its positions against the old maximum.
                float rescale = MathF.Exp(previous - max);
                if (rescale < AttentionMath.NegligibleWeight) rescale = 0; // relative to the new maximum, which weighs 1
                _sum[j] *= rescale;
                TensorPrimitives.Multiply(_out.AsSpan(j * d, d), rescale, _out.AsSpan(j * d, d));
                _max[j] = max;
            }
            _sum[j] += WeighRow(row, seen, max);
        }
    }

    /// <summary>The largest of the row's first <paramref name="seen"/> scores.</summary>
    float RowMax(float* row, int seen)
    {
        if (seen < TilePositions || _vectorBits == 0) return TensorPrimitives.Max(new ReadOnlySpan<float>(row, seen));
        var m = Vector256.MaxNative(Vector256.MaxNative(Vector256.Load(row), Vector256.Load(row + 8)), Vector256.MaxNative(Vector256.Load(row + 16), Vector256.Load(row + 24)));
        m = Vector256.MaxNative(m, Vector256.MaxNative(Vector256.MaxNative(Vector256.Load(row + 32), Vector256.Load(row + 40)), Vector256.MaxNative(Vector256.Load(row + 48), Vector256.Load(row + 56))));
        var half = Vector128.MaxNative(m.GetLower(), m.GetUpper());
        half = Vector128.MaxNative(half, Vector128.Shuffle(half, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(half.GetElement(0), half.GetElement(1));
    }

    /// <summary>
    /// The row's weights in place of its scores, e^(score - max) for its first <paramref name="seen"/>
    /// positions (0 below <see cref="AttentionMath.NegligibleWeight"/>) and 0 past them; returns their sum.
    /// </summary>
    /// <remarks>
    /// One pass where there were four (shift, exponential, zeroing, sum: library calls on 64 floats,
    /// each paying its entry), with the decode step's inlined single-precision exponential.
    /// </remarks>
    float WeighRow(float* row, int seen, float max)
    {
        if (_vectorBits == 0)
        {
            float total = 0;
            for (int t = 0; t < TilePositions; t++)
            {
                float e = t < seen ? MathF.Exp(row[t] - max) : 0;
                row[t] = e < AttentionMath.NegligibleWeight ? 0 : e;
                total += row[t];
            }
            return total;
        }
        if (_vectorBits == 512)
        {
            var shift512 = Vector512.Create(max);
            var limit512 = Vector512.Create(AttentionMath.NegligibleWeight);
            var sum512 = Vector512<float>.Zero;
            for (int t = 0; t < TilePositions; t += 16)
            {
                var e = AttentionMath.Exp(Vector512.Load(row + t) - shift512);
                var drop = Vector512.LessThan(e, limit512);
                if (t + 16 > seen) drop |= Vector512.GreaterThanOrEqual(Vector512<int>.Indices + Vector512.Create(t), Vector512.Create(seen)).AsSingle();
                e = Vector512.AndNot(e, drop);
                e.Store(row + t);
                sum512 += e;
            }
            return Vector512.Sum(sum512);
        }
        var shift = Vector256.Create(max);
        var limit = Vector256.Create(AttentionMath.NegligibleWeight);
        var sum = Vector256<float>.Zero;
        for (int t = 0; t < TilePositions; t += 8)
        {
            var e = AttentionMath.Exp(Vector256.Load(row + t) - shift);
            var drop = Vector256.LessThan(e, limit);
            if (t + 8 > seen) drop |= Vector256.GreaterThanOrEqual(Vector256<int>.Indices + Vector256.Create(t), Vector256.Create(seen)).AsSingle();
            e = Vector256.AndNot(e, drop); // a NaN stays NaN
            e.Store(row + t);
            sum += e;
        }
        return Vector256.Sum(sum);
    }

    /// <summary>Scores of every query head of the block (the queries already scaled) against the tile's transposed keys.</summary>
    void Scores(float* q, float* kt, float* p, int padded)
    {
        int d = _d;
        if (_vectorBits == 512)
        {
            for (int j = 0; j < padded; j += Quad) Scores512(q + j * d, kt, p + j * TilePositions, d);
        }
        else if (_vectorBits == 256)
        {
            for (int j = 0; j < padded; j += Quad)
                for (int t = 0; t < TilePositions; t += 16) Scores256(q + j * d, kt + t, p + j * TilePositions + t, d);
        }
        else
        {
            for (int j = 0; j < padded; j++)
                for (int t = 0; t < TilePositions; t++)
                {
                    float s = 0;
                    for (int i = 0; i < d; i++) s += q[j * d + i] * kt[i * TilePositions + t];
                    p[j * TilePositions + t] = s;
                }
        }
    }

    /// <summary>Four query heads × the tile's 64 positions: 16 accumulators, one dimension per step.</summary>
    static void Scores512(float* q, float* kt, float* p, int d)
    {
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        float* q1 = q + d, q2 = q1 + d, q3 = q2 + d;
        for (int i = 0; i < d; i++)
        {
            float* keys = kt + i * TilePositions;
            var k0 = Vector512.Load(keys);
            var k1 = Vector512.Load(keys + 16);
            var k2 = Vector512.Load(keys + 32);
            var k3 = Vector512.Load(keys + 48);
            var b = Vector512.Create(q[i]);
            a00 = Vector512.FusedMultiplyAdd(k0, b, a00);
            a01 = Vector512.FusedMultiplyAdd(k1, b, a01);
            a02 = Vector512.FusedMultiplyAdd(k2, b, a02);
            a03 = Vector512.FusedMultiplyAdd(k3, b, a03);
            b = Vector512.Create(q1[i]);
            a10 = Vector512.FusedMultiplyAdd(k0, b, a10);
            a11 = Vector512.FusedMultiplyAdd(k1, b, a11);
            a12 = Vector512.FusedMultiplyAdd(k2, b, a12);
            a13 = Vector512.FusedMultiplyAdd(k3, b, a13);
            b = Vector512.Create(q2[i]);
            a20 = Vector512.FusedMultiplyAdd(k0, b, a20);
            a21 = Vector512.FusedMultiplyAdd(k1, b, a21);
            a22 = Vector512.FusedMultiplyAdd(k2, b, a22);
            a23 = Vector512.FusedMultiplyAdd(k3, b, a23);
            b = Vector512.Create(q3[i]);
            a30 = Vector512.FusedMultiplyAdd(k0, b, a30);
            a31 = Vector512.FusedMultiplyAdd(k1, b, a31);
            a32 = Vector512.FusedMultiplyAdd(k2, b, a32);
            a33 = Vector512.FusedMultiplyAdd(k3, b, a33);
        }
        a00.Store(p); a01.Store(p + 16); a02.Store(p + 32); a03.Store(p + 48);
        p += TilePositions;
        a10.Store(p); a11.Store(p + 16); a12.Store(p + 32); a13.Store(p + 48);
        p += TilePositions;
        a20.Store(p); a21.Store(p + 16); a22.Store(p + 32); a23.Store(p + 48);
        p += TilePositions;
        a30.Store(p); a31.Store(p + 16); a32.Store(p + 32); a33.Store(p + 48);
    }

    /// <summary>Four query heads × 16 of the tile's positions: 8 accumulators, which leave AVX2's 16 registers room for the keys.</summary>
    static void Scores256(float* q, float* kt, float* p, int d)
    {
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<float> a20 = default, a21 = default, a30 = default, a31 = default;
        float* q1 = q + d, q2 = q1 + d, q3 = q2 + d;
        for (int i = 0; i < d; i++)
        {
            float* keys = kt + i * TilePositions;
            var k0 = Vector256.Load(keys);
            var k1 = Vector256.Load(keys + 8);
            var b = Vector256.Create(q[i]);
            a00 = Vector256.FusedMultiplyAdd(k0, b, a00);
            a01 = Vector256.FusedMultiplyAdd(k1, b, a01);
            b = Vector256.Create(q1[i]);
            a10 = Vector256.FusedMultiplyAdd(k0, b, a10);
            a11 = Vector256.FusedMultiplyAdd(k1, b, a11);
            b = Vector256.Create(q2[i]);
            a20 = Vector256.FusedMultiplyAdd(k0, b, a20);
            a21 = Vector256.FusedMultiplyAdd(k1, b, a21);
            b = Vector256.Create(q3[i]);
            a30 = Vector256.FusedMultiplyAdd(k0, b, a30);
            a31 = Vector256.FusedMultiplyAdd(k1, b, a31);
        }
        a00.Store(p); a01.Store(p + 8);
        a10.Store(p + TilePositions); a11.Store(p + TilePositions + 8);
        a20.Store(p + 2 * TilePositions); a21.Store(p + 2 * TilePositions + 8);
        a30.Store(p + 3 * TilePositions); a31.Store(p + 3 * TilePositions + 8);
    }

    /// <summary>Adds each query head's weighted values of the tile's <paramref name="n"/> positions to its output.</summary>
    void AccumulateValues(float* p, float* v, int stride, int n, float* o, int padded)
    {
        for (int j = 0; j < padded; j += Quad)
            AttentionQuads.AccumulateValues(_vectorBits, p + j * TilePositions, TilePositions, v, stride, n, o + j * _d, _d);
    }
}
