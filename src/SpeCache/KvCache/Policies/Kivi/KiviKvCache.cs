using System.Numerics.Tensors;
using SpeCache.KvCache.Quantization;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.KvCache.Policies.Kivi;

/// <summary>KIVI settings: code width, group size, and how many newest tokens stay full precision.</summary>
public sealed record KiviOptions(int Bits = 2, int GroupSize = 32, int ResidualLength = 64)
{
    public void Validate()
    {
        if (Bits is not (1 or 2 or 4)) throw new ArgumentException($"KIVI bits must be 1, 2 or 4 (got {Bits})");
        if (GroupSize is not (32 or 64)) throw new ArgumentException($"KIVI group size must be 32 or 64 (got {GroupSize})");
        if (ResidualLength < GroupSize || ResidualLength % GroupSize != 0)
            throw new ArgumentException($"KIVI residual length must be a positive multiple of the group size {GroupSize} (got {ResidualLength})");
    }
}

/// <summary>
/// KIVI: every key and value in low-bit codes (keys per channel over groups of G tokens, values per
/// token), except a full-precision residual of the newest tokens. The residual keeps between
/// ResidualLength and ResidualLength + G - 1 tokens: when it reaches ResidualLength + G, its oldest G
/// tokens are quantized as one key group (and G value tokens) together. Attention scores the packed
/// codes directly (<see cref="KiviAttention"/>), never a dequantized copy, and one softmax spans
/// both parts. The residual is kept in F32 because it is small (R + G tokens per head) and exact.
/// </summary>
public sealed class KiviKvCache : IKvCache
{
    readonly LowBitCopy _copy;
    readonly KiviFormat _format;
    readonly int _layers, _kvHeads, _headDim, _group;
    readonly byte[][] _keyGroups;    // views of the copy's arrays, per layer and KV head
    readonly byte[][] _values;
    readonly float[][] _residualK;
    readonly float[][] _residualV;
    readonly int[] _quantized;       // per layer: tokens in the low-bit part (a multiple of G)
    readonly int[] _residual;        // per layer: tokens in the residual
    readonly int[] _pending;         // per layer: tokens appended but not committed
    readonly Scratch[] _scratch;     // one per attention worker
    readonly int _workers;
    readonly IWorkerThreads _threads;
    readonly float _scale;

    /// <summary>One worker's buffers for one KV head's attention.</summary>
    sealed class Scratch(int group, int capacity, int groupSize, int headDim)
    {
        /// <summary>One row per query head of the group, as long as the context: scores, then softmax weights in place.</summary>
        public readonly float[] Scores = new float[group * capacity];
        /// <summary>A part-filled last key group's scores, before they go to their rows.</summary>
        public readonly float[] GroupScores = new float[group * groupSize];
        /// <summary>The group's queries times 1/sqrt(d), so the scores need no scaling pass.</summary>
        public readonly float[] Queries = new float[group * headDim];
    }

    /// <summary>Contexts from this many positions (over all KV heads) on spread the heads over threads.</summary>
    const int ParallelFromPositions = 4096;

    /// <param name="threads">The threads attention spreads over (at most one per KV head); by default the .NET thread pool's.</param>
    public KiviKvCache(ModelConfig config, int capacity, KiviOptions options, IWorkerThreads? threads = null)
    {
        options.Validate();
        if (capacity <= 0 || capacity > config.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), $"context {capacity} must be between 1 and the model's {config.ContextLength}");
        Options = options;
        Capacity = capacity;
        _layers = config.LayerCount;
        _kvHeads = config.KvHeadCount;
        _headDim = config.HeadDim;
        _group = config.QueryGroupSize;
        _copy = new LowBitCopy(config, capacity, options.Bits, options.GroupSize, options.ResidualLength);
        _format = _copy.Format;
        (_keyGroups, _values, _residualK, _residualV) = (_copy.KeyGroups, _copy.Values, _copy.ResidualK, _copy.ResidualV);
        (_quantized, _residual) = (_copy.Quantized, _copy.Residual);
        _pending = new int[_layers];
        _threads = threads ?? new ParallelWorkers();
        _workers = Math.Clamp(_threads.ThreadCount, 1, _kvHeads);
        _scratch = new Scratch[_workers];
        for (int w = 0; w < _workers; w++) _scratch[w] = new Scratch(_group, capacity, options.GroupSize, _headDim);
        _scale = 1f / MathF.Sqrt(_headDim);
    }

    public KiviOptions Options { get; }
    public int Length { get; private set; }
    public int Capacity { get; }

    public KvMemory Memory => new(_copy.Bytes, 0);

    /// <summary>Fast-tier bytes per token of the low-bit part, over all layers (the residual is a constant on top).</summary>
    public static long BytesPerToken(ModelConfig config, KiviOptions options) =>
        LowBitCopy.BytesPerToken(config, options.Bits, options.GroupSize);

    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count)
    {
        if (Length + count > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} + {count} tokens exceed its capacity of {Capacity}");
        if (_pending[layer] != 0) throw new InvalidOperationException($"layer {layer} already has uncommitted tokens");
        int kvDim = _kvHeads * _headDim;
        for (int t = 0; t < count; t++)
            _copy.Add(layer, keys.Slice(t * kvDim, kvDim), values.Slice(t * kvDim, kvDim));
        _pending[layer] = count;
    }

    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count)
    {
        if (_workers == 1 || (long)(Length + count) * _kvHeads < ParallelFromPositions)
        {
            for (int h = 0; h < _kvHeads; h++) AttendHead(_scratch[0], layer, h, queries, output, count);
            return;
        }
        // Spans cannot enter a lambda: the rows go through arrays, the call's shape through fields,
        // so the loop body is one delegate made once.
        if (_rowsIn.Length < queries.Length) (_rowsIn, _rowsOut) = (new float[queries.Length], new float[queries.Length]);
        queries.CopyTo(_rowsIn);
        (_callLayer, _callCount, _callLength) = (layer, count, queries.Length);
        _threads.Run(_workers, _attendHeadsOfWorker ??= AttendHeadsOfWorker);
        _rowsOut.AsSpan(0, output.Length).CopyTo(output);
    }

    float[] _rowsIn = [], _rowsOut = [];
    int _callLayer, _callCount, _callLength;
    Action<int>? _attendHeadsOfWorker;

    void AttendHeadsOfWorker(int worker)
    {
        for (int h = worker; h < _kvHeads; h += _workers)
            AttendHead(_scratch[worker], _callLayer, h, _rowsIn.AsSpan(0, _callLength), _rowsOut.AsSpan(0, _callLength), _callCount);
    }

    void AttendHead(Scratch scratch, int layer, int h, ReadOnlySpan<float> queries, Span<float> output, int count)
    {
        int g = Options.GroupSize, qDim = _kvHeads * _group * _headDim, quantized = _quantized[layer];
        int slot = layer * _kvHeads + h;
        var scores = scratch.Scores;
        var groupScores = scratch.GroupScores;
        var q = scratch.Queries.AsSpan(0, _group * _headDim);
        for (int i = 0; i < count; i++)
        {
            int visible = Length + i + 1; // causal: positions 0 .. Length + i
            int fromCodes = Math.Min(quantized, visible);
            int fromResidual = visible - fromCodes;
            TensorPrimitives.Multiply(queries.Slice(i * qDim + h * _group * _headDim, _group * _headDim), _scale, q);
            var o = output.Slice(i * qDim + h * _group * _headDim, _group * _headDim);

            // Scores, one row of `visible` per query head: packed key groups (all query heads of this
            // KV head and all whole groups in one call, each head's scores straight into its row), then
            // the residual.
            int whole = fromCodes / g * g; // a prefill row may see only part of the last quantized group
            KiviAttention.KeyScores(_format, q, _keyGroups[slot], whole / g, scores.AsSpan(0, (_group - 1) * visible + whole), visible, []);
            if (whole < fromCodes)
            {
                KiviAttention.KeyScores(_format, q, KeyGroup(slot, whole), groupScores);
                for (int j = 0; j < _group; j++)
                    groupScores.AsSpan(j * g, fromCodes - whole).CopyTo(scores.AsSpan(j * visible + whole));
            }
            for (int j = 0; j < _group; j++)
            {
                var qj = q.Slice(j * _headDim, _headDim);
                var row = scores.AsSpan(j * visible, visible);
                for (int t = 0; t < fromResidual; t++)
                    row[fromCodes + t] = TensorPrimitives.Dot(qj, _residualK[slot].AsSpan(t * _headDim, _headDim));
                AttentionMath.SoftMax(row);
            }

            // Values: the weight rows read in place (each row's first fromCodes), then the residual's.
            o.Clear();
            if (fromCodes > 0)
                KiviAttention.AccumulateValues(_format, scores.AsSpan(0, (_group - 1) * visible + fromCodes), fromCodes, visible,
                    _values[slot].AsSpan(0, (int)_format.ValueBytes(fromCodes)), o);
            for (int j = 0; j < _group; j++)
            {
                var oj = o.Slice(j * _headDim, _headDim);
                var row = scores.AsSpan(j * visible, visible);
                for (int t = 0; t < fromResidual; t++)
                    TensorPrimitives.MultiplyAdd(_residualV[slot].AsSpan(t * _headDim, _headDim), row[fromCodes + t], oj, oj);
            }
        }
    }

    ReadOnlySpan<byte> KeyGroup(int slot, int first) => _keyGroups[slot].AsSpan(first / Options.GroupSize * _format.KeyGroupBytes, _format.KeyGroupBytes);

    public void Commit(int count)
    {
        for (int l = 0; l < _layers; l++)
        {
            if (_pending[l] != count)
                throw new InvalidOperationException($"commit of {count} tokens, but layer {l} holds {_pending[l]} uncommitted");
            _pending[l] = 0;
        }
        Length += count;
    }

    public void Clear()
    {
        Length = 0;
        _copy.Clear();
        Array.Clear(_pending);
    }

    public void Dispose() { }
}
