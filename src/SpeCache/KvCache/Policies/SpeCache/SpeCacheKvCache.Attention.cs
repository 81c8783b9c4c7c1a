using System.Diagnostics;
using System.Numerics.Tensors;
using SpeCache.KvCache.Quantization;

namespace SpeCache.KvCache.Policies.SpeCache;

public sealed partial class SpeCacheKvCache
{
    /// <summary>Contexts from this many positions on spread a layer's KV heads over threads; below it the hand-off costs more than it saves.</summary>
    const int ParallelFromPositions = 2048;

    float[] _rowsIn = [], _rowsOut = [];

    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count)
    {
        if (count != _stepRows) throw new InvalidOperationException($"attend of {count} rows after an append of {_stepRows}");
        int real = count - _stepSpeculative;

        // Whatever was prefetched for this layer becomes the half the real row reads.
        TakePrefetch(layer, waitIsOnCriticalPath: real == 1);

        var work = new LayerWork(layer, real, _stepSpeculative, _staging[layer][_current[layer]], _staging[layer][1 - _current[layer]]);
        if (_workers == 1 || (_quantized[layer] + _residual[layer]) * (long)_kvHeads < ParallelFromPositions * 2L)
        {
            for (int h = 0; h < _kvHeads; h++) _scratch[0].AttendHead(work, h, queries, output);
        }
        else
        {
            // Spans cannot enter a lambda: the rows go through arrays the workers slice again, and
            // the step's work through a field, so the loop body is one delegate made once.
            if (_rowsIn.Length < queries.Length) (_rowsIn, _rowsOut) = (new float[queries.Length], new float[queries.Length]);
            queries.CopyTo(_rowsIn);
            _rowsLength = queries.Length;
            _work = work;
            _threads.Run(_workers, _attendHeadsOfWorker ??= AttendHeadsOfWorker);
            _rowsOut.AsSpan(0, output.Length).CopyTo(output);
        }
        // Misses fetched on demand travel as one transfer per layer (one latency, as one DMA batch
        // would), started at the first miss; the step waits for it here.
        long fetched = 0, fetchStart = long.MaxValue;
        for (int w = 0; w < _workers; w++) _scratch[w].TakeFetch(ref fetched, ref fetchStart);
        if (fetched > 0)
        {
            _link.WaitForTransfer(fetched, fetchStart);
            Counters.OnDemandTicks += Stopwatch.GetTimestamp() - fetchStart;
            Interlocked.Add(ref Counters.HostBytesRead, fetched);
        }
        for (int w = 0; w < _workers; w++) _scratch[w].MergeCountersInto(Counters);
        if (real == 1) Counters.DecodeSteps += layer == 0 ? 1 : 0;

        if (_stepSpeculative == 1 && work.Next.Positions.Length > 0 && !_disposed)
        {
            _jobDone[layer].Reset();
            _jobPending[layer] = true;
            _jobs.Add(layer);
        }
    }

    LayerWork _work;
    int _rowsLength;
    Action<int>? _attendHeadsOfWorker;

    void AttendHeadsOfWorker(int worker)
    {
        for (int h = worker; h < _kvHeads; h += _workers)
            _scratch[worker].AttendHead(_work, h, _rowsIn.AsSpan(0, _rowsLength), _rowsOut.AsSpan(0, _rowsLength));
    }

    void TakePrefetch(int layer, bool waitIsOnCriticalPath)
    {
        if (!_jobPending[layer]) return;
        long start = Stopwatch.GetTimestamp();
        _jobDone[layer].Wait();
        if (waitIsOnCriticalPath) Counters.PrefetchWaitTicks += Stopwatch.GetTimestamp() - start;
        _jobPending[layer] = false;
        _current[layer] ^= 1;
    }

    /// <summary>One layer's step: which rows are real and speculative, and the staging halves to read and to fill.</summary>
    readonly record struct LayerWork(int Layer, int Real, int Speculative, Staging Current, Staging Next);

    /// <summary>
    /// One worker's buffers and the per-KV-head attention. A decode step stacks the real row's and
    /// the speculative row's query heads (2 x the GQA group), so the low-bit kernels expand each
    /// group's codes once for both rows.
    /// </summary>
    sealed class Scratch
    {
        readonly SpeCacheKvCache _c;
        readonly int _d, _group, _k;
        readonly float[] _q, _out;                 // (rows x group, headDim) stacked queries and outputs
        readonly float[] _raw, _weights;           // (rows x group, stride) scores, then their unnormalized softmax weights
        readonly float[] _rowMax, _inverseSums;    // (rows x group) each head's max score before the 16-bit pairs replace theirs; 1 / its softmax sum
        readonly float[] _importance, _shifted, _heap;
        readonly float[] _selectedK, _selectedV;   // (k, headDim) the 16-bit pairs attended this step
        readonly float[] _pairScores;              // (rows x group, k) the four-head kernels' scores, then weights, of those pairs
        readonly int _quadBits;                    // AttentionQuads' vector width here, 0 for none
        readonly float[] _hostKeys, _hostValues;   // (context, headDim) prefill and recall checks
        readonly int[] _selected, _exact, _truth;
        readonly CausalAttention _causal;          // prefill rows' attention
        readonly KvCounters _counters = new();

        public Scratch(SpeCacheKvCache cache)
        {
            _c = cache;
            _d = cache._headDim;
            _group = cache._group;
            _k = cache._k;
            int rows = 2 * _group, stride = cache.Capacity + 1;
            _q = new float[rows * _d];
            _out = new float[rows * _d];
            _raw = new float[rows * stride];
            _weights = new float[rows * stride];
            _rowMax = new float[rows];
            _inverseSums = new float[rows];
            _importance = new float[stride];
            _shifted = new float[stride];
            _heap = new float[_k];
            _selectedK = new float[_k * _d];
            _selectedV = new float[_k * _d];
            _pairScores = new float[rows * _k];
            _quadBits = AttentionQuads.VectorBits(_d);
            _hostKeys = new float[(long)cache.Capacity * _d];
            _hostValues = new float[(long)cache.Capacity * _d];
            _selected = new int[_k];
            _exact = new int[_k];
            _truth = new int[_k];
            _causal = new CausalAttention(_d, _group);
        }

        long _fetchedBytes, _fetchStart = long.MaxValue;

        /// <summary>Hands over the bytes this worker fetched on demand this layer, and when the first fetch started.</summary>
        public void TakeFetch(ref long bytes, ref long start)
        {
            bytes += _fetchedBytes;
            start = Math.Min(start, _fetchStart);
            _fetchedBytes = 0;
            _fetchStart = long.MaxValue;
        }

        public void MergeCountersInto(KvCounters total)
        {
            total.FastBytesRead += _counters.FastBytesRead;
            total.TopKRequested += _counters.TopKRequested;
            total.PrefetchHits += _counters.PrefetchHits;
            total.Misses += _counters.Misses;
            total.MissesServedLowBit += _counters.MissesServedLowBit;
            total.RecallSum += _counters.RecallSum;
            total.RecallChecks += _counters.RecallChecks;
            _counters.Reset();
        }

        public void AttendHead(LayerWork work, int h, ReadOnlySpan<float> queries, Span<float> output)
        {
            int qDim = _c._kvHeads * _group * _d, rowDim = _group * _d;
            if (work.Real > 1)
            {
                AttendExactly(work.Layer, h, queries, output, work.Real, qDim);
                if (work.Speculative == 0) return;
                // A speculative row after several real ones: decode it alone below.
                queries = queries[(work.Real * qDim)..];
                output = output[(work.Real * qDim)..];
                work = work with { Real = 0 };
            }
            int rows = work.Real + work.Speculative;
            // The queries carry the 1/sqrt(d) scale, so every score comes out scaled (no pass over 32K-score rows to scale them).
            for (int r = 0; r < rows; r++)
                TensorPrimitives.Multiply(queries.Slice(r * qDim + h * rowDim, rowDim), _c._scale, _q.AsSpan(r * rowDim, rowDim));
            Decode(work, h, rows);
            for (int r = 0; r < rows; r++)
                _out.AsSpan(r * rowDim, rowDim).CopyTo(output.Slice(r * qDim + h * rowDim, rowDim));
        }

        /// <summary>Prefill rows: exact attention over the 16-bit host copy, as the full cache computes it.</summary>
        void AttendExactly(int layer, int h, ReadOnlySpan<float> queries, Span<float> output, int rows, int qDim)
        {
            int slot = layer * _c._kvHeads + h, total = _c.Length + rows, d = _d, rowDim = _group * d;
            LoadHostPairs(slot, total);
            _causal.Attend(_hostKeys.AsSpan(0, total * d), _hostValues.AsSpan(0, total * d), d, _c.Length,
                queries[(h * rowDim)..], output[(h * rowDim)..], qDim, rows, _c._scale);
        }

        void LoadHostPairs(int slot, int count)
        {
            for (int t = 0; t < count; t++)
                _c.ReadPair(slot, t, _hostKeys.AsSpan(t * _d, _d), _hostValues.AsSpan(t * _d, _d));
        }

        /// <summary>
        /// The decode step for one KV head. Rows: the real token (if <c>work.Real</c> is 1), then the
        /// speculative token (if any). Every row sees the low-bit copy and the residual; the real row
        /// attends its top-k in 16 bit; the speculative row reuses those pairs, adds its own key and
        /// value, and picks what to prefetch for the next step.
        /// </summary>
        void Decode(LayerWork work, int h, int rows)
        {
            var c = _c;
            int slot = work.Layer * c._kvHeads + h, d = _d, g = c.Options.GroupSize;
            int quantized = c._quantized[work.Layer], residual = c._residual[work.Layer];
            int stride = quantized + residual + 1; // the speculative row's own position is the last
            int heads = rows * _group;

            // Scores against the low-bit keys, straight into each head's row: one kernel call over every
            // group for every row's query heads, which also keeps each row's max.
            var rowMax = _rowMax.AsSpan(0, heads);
            rowMax.Fill(float.NegativeInfinity);
            KiviAttention.KeyScores(c._format, _q.AsSpan(0, heads * d), c._keyGroups[slot], quantized / g, _raw, stride, rowMax);
            // Exact scores against the residual (and, for the speculative row, its own key): four
            // heads at a time share each key (AttentionQuads), the heads left over one by one.
            int quads = QuadHeads(heads);
            for (int i = 0; i < quads; i += 4)
                QuadScores(i, c._residualK[slot], residual, _raw, i * stride + quantized, stride);
            for (int i = 0; i < heads; i++)
            {
                var qi = _q.AsSpan(i * d, d);
                var row = _raw.AsSpan(i * stride, stride);
                for (int t = i < quads ? residual : 0; t < residual; t++)
                    row[quantized + t] = AttentionMath.Dot(qi, c._residualK[slot].AsSpan(t * d, d));
                bool speculative = i >= work.Real * _group;
                if (speculative) row[stride - 1] = AttentionMath.Dot(qi, c._specK.AsSpan(h * d, d));
                // The low-bit part's max came with its scores; the residual's (and the speculative row's own) here.
                var residualScores = row[quantized..(speculative ? stride : stride - 1)];
                if (!residualScores.IsEmpty) rowMax[i] = MathF.Max(rowMax[i], TensorPrimitives.Max(residualScores));
            }

            // The speculative row picks the next step's top-k first, from the same estimate the next
            // real row will use (low-bit and residual scores, before any 16-bit pair replaces them),
            // over the positions that will be low-bit then: today's, plus the residual's oldest group
            // if the next token's append folds it.
            // (A cache made without the speculative row has no pool: its speculative rows prefetch nothing.)
            if (work.Speculative == 1 && work.Next.Positions.Length > 0)
            {
                int nextQuantized = quantized + (residual + 1 == c._residualMax ? g : 0);
                Importance(work.Real, stride, nextQuantized);
                work.Next.Counts[h] = TopK.Select(_importance.AsSpan(0, nextQuantized), _k, work.Next.Positions.AsSpan(h * _k, _k), _heap);
            }

            int exact = 0;
            if (work.Real == 1)
            {
                Importance(0, stride, quantized);
                int selected = TopK.Select(_importance.AsSpan(0, quantized), _k, _selected, _heap);
                if (c.Options.MeasureRecall && selected > 0) MeasureRecall(slot, quantized, selected);
                exact = GatherSelected(slot, h, selected, work.Current);
                _counters.FastBytesRead += (long)quantized * (c._format.KeyGroupBytes / g + c._format.ValueTokenBytes)
                    + (long)residual * 2 * d * sizeof(float) + (long)exact * 2 * d * sizeof(float);
            }

            // One softmax per query head over the mixed cache, 16-bit scores at the selected pairs,
            // left unnormalized: the outputs are divided by the sums at the end, once per channel.
            for (int i = 0; i < quads; i += 4)
                QuadScores(i, _selectedK, exact, _pairScores, i * _k, _k);
            for (int i = 0; i < heads; i++)
            {
                bool speculative = i >= work.Real * _group;
                var row = _raw.AsSpan(i * stride, speculative ? stride : stride - 1);
                var qi = _q.AsSpan(i * d, d);
                // Shifted by the row's max before the 16-bit scores went in, or a 16-bit score above it:
                // at or above the real max, so every weight is at most 1 (no pass to find the max).
                float shift = _rowMax[i];
                for (int e = 0; e < exact; e++)
                    shift = MathF.Max(shift, row[_exact[e]] = i < quads ? _pairScores[i * _k + e] : AttentionMath.Dot(qi, _selectedK.AsSpan(e * d, d)));
                var weights = _weights.AsSpan(i * stride, row.Length);
                float sum = AttentionMath.ExpSum(row, shift, weights);
                // The sum is at least e^(max - shift): below 1e-3 the estimate overshot the real max by
                // more than 6.9, and smaller weights would lose bits to subnormals. Shift by the real max.
                if (!(sum >= 1e-3f)) sum = AttentionMath.ExpSum(row, TensorPrimitives.Max(row), weights);
                _inverseSums[i] = 1f / sum;
            }

            // Values: the 16-bit pairs, the residual and the own value per head, then every head's
            // low-bit part at once, reading the weight rows in place with the 16-bit positions at 0.
            var o = _out.AsSpan(0, heads * d);
            o.Clear();
            for (int i = 0; i < heads; i++)
            {
                var oi = o.Slice(i * d, d);
                var p = _weights.AsSpan(i * stride, stride);
                for (int e = 0; e < exact; e++)
                {
                    // The quads' weights of the 16-bit pairs, side by side for their kernel.
                    if (i < quads) _pairScores[i * _k + e] = p[_exact[e]];
                    else AttentionMath.MultiplyAdd(_selectedV.AsSpan(e * d, d), p[_exact[e]], oi);
                    p[_exact[e]] = 0;
                }
                if (i >= quads)
                    for (int t = 0; t < residual; t++)
                        AttentionMath.MultiplyAdd(c._residualV[slot].AsSpan(t * d, d), p[quantized + t], oi);
                if (i >= work.Real * _group)
                    AttentionMath.MultiplyAdd(c._specV.AsSpan(h * d, d), p[stride - 1], oi);
            }
            for (int i = 0; i < quads; i += 4)
            {
                QuadValues(i, _pairScores, i * _k, _k, _selectedV, exact);
                QuadValues(i, _weights, i * stride + quantized, stride, c._residualV[slot], residual);
            }
            if (quantized > 0)
                KiviAttention.AccumulateValues(c._format, _weights, quantized, stride, c._values[slot].AsSpan(0, (int)c._format.ValueBytes(quantized)), o);
            for (int i = 0; i < heads; i++)
                TensorPrimitives.Multiply(o.Slice(i * d, d), _inverseSums[i], o.Slice(i * d, d));
        }

        /// <summary>
        /// How many of the step's stacked query heads go through the four-head kernels: every whole
        /// four where the CPU has them (none on CPUs without 256-bit vectors, whose plain loops
        /// would be slower than the per-head dots).
        /// </summary>
        int QuadHeads(int heads) => _quadBits > 0 ? heads / 4 * 4 : 0;

        /// <summary>Scores of query heads i .. i + 3 against <paramref name="n"/> float keys, head r's into scores[at + r × sStride ..].</summary>
        unsafe void QuadScores(int i, float[] keys, int n, float[] scores, int at, int sStride)
        {
            if (n == 0) return;
            fixed (float* q = _q)
            fixed (float* k = keys)
            fixed (float* s = scores)
                AttentionQuads.Scores(_quadBits, q + i * _d, k, n, _d, 1f, s + at, sStride);
        }

        /// <summary>Adds to heads i .. i + 3's outputs their weights (head r's at weights[at + r × pStride ..]) of <paramref name="n"/> float values.</summary>
        unsafe void QuadValues(int i, float[] weights, int at, int pStride, float[] values, int n)
        {
            if (n == 0) return;
            fixed (float* p = weights)
            fixed (float* v = values)
            fixed (float* o = _out)
                AttentionQuads.AccumulateValues(_quadBits, p + at, pStride, v, _d, n, o + i * _d, _d);
        }

        /// <summary>
        /// GQA aggregation of row <paramref name="row"/>'s query heads over positions [0, candidates):
        /// the largest log-probability any head gives the position (each head's scores minus its max
        /// over all it sees). Ranking a single head by this is ranking by its softmax, and it needs no
        /// exponentials: top-k runs every step on every head.
        /// </summary>
        void Importance(int row, int stride, int candidates) =>
            AttentionMath.MaxOfShifted(_raw.AsSpan(row * _group * stride), stride, _rowMax.AsSpan(row * _group, _group), _importance.AsSpan(0, candidates));

        /// <summary>
        /// Brings the selected positions' 16-bit pairs into _selectedK/_selectedV: from the staging pool
        /// when prefetched (a hit), else from the host tier now or not at all (served low-bit), as the
        /// miss policy says. Returns how many pairs are 16-bit; their positions are in _exact.
        /// </summary>
        int GatherSelected(int slot, int h, int selected, Staging staging)
        {
            var c = _c;
            int d = _d;
            // Empty when nothing was prefetched (and the pool has no room at all without the speculative row).
            var staged = staging.Counts[h] == 0 ? [] : staging.Positions.AsSpan(h * _k, staging.Counts[h]);
            int exact = 0;
            long fetched = 0, fetchStart = 0;
            if (c.Options.Miss == MissPolicy.Fetch)
                for (int i = 0; i < selected; i++)
                    if (staged.BinarySearch(_selected[i]) < 0) c._host.Prefetch(c.HostOffset(slot, _selected[i]), c._pairBytes);
            for (int i = 0; i < selected; i++)
            {
                int position = _selected[i];
                int at = staged.BinarySearch(position);
                if (at >= 0)
                {
                    _counters.PrefetchHits++;
                    staging.K.AsSpan((h * _k + at) * d, d).CopyTo(_selectedK.AsSpan(exact * d, d));
                    staging.V.AsSpan((h * _k + at) * d, d).CopyTo(_selectedV.AsSpan(exact * d, d));
                }
                else
                {
                    _counters.Misses++;
                    if (c.Options.Miss == MissPolicy.LowBit)
                    {
                        _counters.MissesServedLowBit++;
                        continue;
                    }
                    if (fetched == 0) fetchStart = Stopwatch.GetTimestamp();
                    c.ReadPair(slot, position, _selectedK.AsSpan(exact * d, d), _selectedV.AsSpan(exact * d, d));
                    fetched += c._pairBytes;
                }
                _exact[exact++] = position;
            }
            if (fetched > 0)
            {
                _fetchedBytes += fetched;
                _fetchStart = Math.Min(_fetchStart, fetchStart);
            }
            _counters.TopKRequested += selected;
            return exact;
        }

        /// <summary>Top-k recall of the low-bit estimate: the exact top-k from the 16-bit keys (same aggregation), compared with _selected.</summary>
        void MeasureRecall(int slot, int quantized, int selected)
        {
            int d = _d;
            LoadHostPairs(slot, quantized);
            int residual = _c._residual[slot / _c._kvHeads];
            var truth = _importance.AsSpan(0, quantized);
            var scores = _shifted.AsSpan(0, quantized + residual);
            for (int j = 0; j < _group; j++)
            {
                var qj = _q.AsSpan(j * d, d);
                for (int t = 0; t < quantized; t++) scores[t] = TensorPrimitives.Dot(qj, _hostKeys.AsSpan(t * d, d));
                for (int t = 0; t < residual; t++) scores[quantized + t] = TensorPrimitives.Dot(qj, _c._residualK[slot].AsSpan(t * d, d));
                // Each head's max over everything it sees, as the estimate uses (scaling by 1/sqrt(d) ranks alike).
                TensorPrimitives.Subtract(scores, TensorPrimitives.Max(scores), scores);
                if (j == 0) scores[..quantized].CopyTo(truth);
                else TensorPrimitives.Max(truth, scores[..quantized], truth);
            }
            int n = TopK.Select(truth, _k, _truth, _heap);
            int common = 0;
            for (int i = 0; i < n; i++)
                if (_selected.AsSpan(0, selected).BinarySearch(_truth[i]) >= 0) common++;
            _counters.RecallSum += (double)common / n;
            _counters.RecallChecks++;
        }
    }
}
