using System.Diagnostics;
using System.Numerics.Tensors;
using SpeCache.KvCache.Quantization;
using SpeCache.KvCache.Tiers;
using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.KvCache.Policies.SpeCache;

/// <summary>
/// SpeCache: every key and value twice. The fast tier holds a KIVI low-bit copy of every token, a
/// full-precision residual of the newest ones, and a staging pool of prefetched 16-bit pairs; the
/// host tier (<see cref="HostTier"/>) holds the 16-bit K and V of every token.
/// </summary>
/// <remarks>
/// <para><b>Decode step</b> (rows: the real token, then one speculative token), per layer and KV head:</para>
/// <list type="number">
/// <item>The real row scores its queries against the low-bit keys and the residual, aggregates the
/// softmax of the query heads that share the KV head (GQA), and takes the top-k positions.</item>
/// <item>Each top-k position found in the staging pool (the previous step's speculative row asked
/// for it) is a hit; a miss is fetched from the host tier now or served from the low-bit copy
/// (<see cref="MissPolicy"/>).</item>
/// <item>Attention runs over the mixed cache: 16-bit at the top-k, full precision in the residual,
/// low-bit everywhere else, one softmax over all of it.</item>
/// <item>The speculative row (a guess of the next token) attends the same way without fetching,
/// its top-k says what the next step will need at this layer, and a background worker copies
/// those pairs from the host tier into the other half of the staging pool while the remaining
/// layers compute. The next step's real row waits only for what is not done yet.</item>
/// </list>
/// <para>The real row never sees the speculative row: rows attend causally and the speculative row
/// is last. Its keys and values live in scratch for the step and are never stored.</para>
/// <para><b>Prefill</b> (several real rows) attends exactly over the 16-bit host copy, as a full
/// cache would; the prompt's tokens enter the low-bit copy group by group as they leave the
/// residual. A <b>pre-decode</b> step (a call with only a speculative row) scores the first token
/// against the low-bit keys, starts its prefetch and yields the first speculative token.</para>
/// <para>The residual holds floats rounded to F16, the values the host tier holds, so a top-k
/// covering the whole context reproduces the 16-bit full cache.</para>
/// </remarks>
public sealed partial class SpeCacheKvCache : IKvCache
{
    readonly KiviFormat _format;
    readonly int _layers, _kvHeads, _headDim, _group, _residualMax, _k;
    readonly int _pairBytes;           // one token's 16-bit K then V in the host tier
    readonly HostTier _host;
    readonly Interconnect _link;

    // Fast tier: the low-bit copy and residual (as the kivi policy), views of its arrays per layer and KV head.
    readonly LowBitCopy _copy;
    readonly byte[][] _keyGroups;
    readonly byte[][] _values;
    readonly float[][] _residualK;
    readonly float[][] _residualV;
    readonly int[] _quantized;         // per layer: tokens in the low-bit part (a multiple of G)
    readonly int[] _residual;          // per layer: tokens in the residual
    readonly int[] _pending;           // per layer: real tokens appended, not committed

    // Fast tier: staging pool, two halves per layer (the one the real row reads, the one being filled).
    readonly Staging[][] _staging;     // [layer][half]
    readonly int[] _current;           // per layer: the half real rows read
    readonly bool[] _jobPending;       // per layer: a prefetch into the other half is queued or running
    readonly ManualResetEventSlim[] _jobDone;

    // Per step.
    int _stepRows, _stepSpeculative;
    readonly float[] _specK, _specV;   // the speculative row's K and V, (kvHeads, headDim)
    readonly float[] _rowK, _rowV;     // one real token's K and V rounded to F16, on their way into the residual

    readonly Scratch[] _scratch;       // one per attention worker
    readonly int _workers;
    readonly IWorkerThreads _threads;
    readonly float _scale;

    readonly Thread _worker;
    readonly System.Collections.Concurrent.BlockingCollection<int> _jobs = new();
    bool _disposed;

    sealed class Staging(int kvHeads, int k, int headDim)
    {
        public readonly int[] Positions = new int[kvHeads * k];  // per KV head, ascending
        public readonly int[] Counts = new int[kvHeads];
        public readonly float[] K = new float[kvHeads * k * headDim];
        public readonly float[] V = new float[kvHeads * k * headDim];
    }

    /// <param name="threads">The threads attention spreads over (at most one per KV head); by default the .NET thread pool's.</param>
    public SpeCacheKvCache(ModelConfig config, int capacity, SpeCacheOptions options, long? fastTierBudget = null, IWorkerThreads? threads = null)
    {
        options.Validate();
        if (capacity <= 0 || capacity > config.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), $"context {capacity} must be between 1 and the model's {config.ContextLength}");
        if (config.HeadDim % KiviFormat.HeadDimMultiple != 0)
            throw new NotSupportedException($"the specache cache needs a head size that is a multiple of {KiviFormat.HeadDimMultiple} (this model's is {config.HeadDim})");
        Options = options;
        Capacity = capacity;
        _layers = config.LayerCount;
        _kvHeads = config.KvHeadCount;
        _headDim = config.HeadDim;
        _group = config.QueryGroupSize;
        _k = options.TopK;
        _pairBytes = 2 * _headDim * sizeof(ushort);
        _link = options.Interconnect;

        long fast = FastTierBytes(config, capacity, options);
        if (fastTierBudget is long budget && fast > budget)
            throw new ArgumentException($"the specache fast tier needs {ByteSize.Format(fast)} for a context of {capacity} tokens, more than the budget of {ByteSize.Format(budget)}");

        long hostBytes = HostTierBytes(config, capacity);
        _host = options.HostTier == "ram" ? HostTier.InRam(hostBytes) : HostTier.OnDiskAt(options.HostTier["disk:".Length..], hostBytes);
        try
        {
            _copy = new LowBitCopy(config, capacity, options.Bits, options.GroupSize, options.ResidualLength);
        }
        catch
        {
            _host.Dispose();
            throw;
        }
        _format = _copy.Format;
        _residualMax = _copy.ResidualMax;
        (_keyGroups, _values, _residualK, _residualV) = (_copy.KeyGroups, _copy.Values, _copy.ResidualK, _copy.ResidualV);
        (_quantized, _residual) = (_copy.Quantized, _copy.Residual);
        _rowK = new float[_kvHeads * _headDim];
        _rowV = new float[_kvHeads * _headDim];
        _pending = new int[_layers];
        _staging = new Staging[_layers][];
        // Without the speculative row nothing is prefetched: the pool is never filled, so it takes no memory.
        int staged = options.SpeculativeRowEnabled ? _k : 0;
        for (int l = 0; l < _layers; l++) _staging[l] = [new(_kvHeads, staged, _headDim), new(_kvHeads, staged, _headDim)];
        _current = new int[_layers];
        _jobPending = new bool[_layers];
        _jobDone = new ManualResetEventSlim[_layers];
        for (int l = 0; l < _layers; l++) _jobDone[l] = new ManualResetEventSlim(false);
        _specK = new float[_kvHeads * _headDim];
        _specV = new float[_kvHeads * _headDim];

        if (2L * _group * (capacity + 1) > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), $"a context of {capacity} tokens is too long for one head's scratch");
        _threads = threads ?? new ParallelWorkers();
        _workers = Math.Clamp(_threads.ThreadCount, 1, _kvHeads);
        _scratch = new Scratch[_workers];
        for (int w = 0; w < _workers; w++) _scratch[w] = new Scratch(this);
        _scale = 1f / MathF.Sqrt(_headDim);

        _worker = new Thread(PrefetchLoop) { IsBackground = true, Name = "specache prefetch" };
        _worker.Start();
    }

    public SpeCacheOptions Options { get; }
    public int Length { get; private set; }
    public int Capacity { get; }
    public int SpeculativeRows => Options.SpeculativeRowEnabled ? 1 : 0;
    public KvCounters Counters { get; } = new();

    /// <summary>The host tier's backing file while visible (disk tier given a file path), for tests and diagnostics.</summary>
    public string? HostFilePath => _host.FilePath;

    public KvMemory Memory => new(FastTierBytesFixed(), _host.Bytes);

    long FastTierBytesFixed() => _copy.Bytes + StagingBytes(_layers, _kvHeads, _headDim, _k, Options.SpeculativeRowEnabled);

    /// <summary>
    /// Where 16-bit pairs land in the fast tier. With the speculative row: the staging pool, two halves
    /// (being read, being filled) of k pairs per layer and KV head. Without it, pairs are fetched on
    /// demand into the attention workers' buffers, at most one layer's k pairs per KV head at a time.
    /// </summary>
    static long StagingBytes(int layers, int kvHeads, int headDim, int k, bool speculative) =>
        (speculative ? layers * 2L : 1L) * kvHeads * k * 2 * headDim * sizeof(float);

    /// <summary>Exact fast-tier bytes a cache of <paramref name="capacity"/> tokens holds: low-bit copy, residual, staging pool.</summary>
    public static long FastTierBytes(ModelConfig config, int capacity, SpeCacheOptions options) =>
        LowBitCopy.BytesFor(config, capacity, options.Bits, options.GroupSize, options.ResidualLength)
        + StagingBytes(config.LayerCount, config.KvHeadCount, config.HeadDim, options.TopK, options.SpeculativeRowEnabled);

    /// <summary>Fast-tier bytes per token of the low-bit copy, over all layers (the residual and staging pool are a constant on top).</summary>
    public static long BytesPerToken(ModelConfig config, SpeCacheOptions options) =>
        LowBitCopy.BytesPerToken(config, options.Bits, options.GroupSize);

    /// <summary>Host-tier bytes: the 16-bit K and V of every position.</summary>
    public static long HostTierBytes(ModelConfig config, int capacity) =>
        (long)config.LayerCount * config.KvHeadCount * capacity * 2 * config.HeadDim * sizeof(ushort);

    long HostOffset(int slot, int position) => ((long)slot * Capacity + position) * _pairBytes;

    /// <summary>Copies one position's 16-bit pair from the host tier into floats: every host-tier read goes through here.</summary>
    void ReadPair(int slot, int position, Span<float> key, Span<float> value)
    {
        var pair = _host.Slice(HostOffset(slot, position), _pairBytes);
        F16.DequantizeRow(pair[..(_pairBytes / 2)], key);
        F16.DequantizeRow(pair[(_pairBytes / 2)..], value);
    }

    public void BeginStep(int count, int speculative)
    {
        if (speculative < 0 || speculative > 1 || speculative > count)
            throw new NotSupportedException($"the specache cache decodes at most one speculative row per step (asked for {speculative} of {count})");
        _stepRows = count;
        _stepSpeculative = speculative;
    }

    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count)
    {
        if (count != _stepRows) BeginStep(count, 0); // a caller that never announced its rows: all real
        int real = count - _stepSpeculative;
        if (Length + real > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} + {real} tokens exceed its capacity of {Capacity}");
        if (_pending[layer] != 0) throw new InvalidOperationException($"layer {layer} already has uncommitted tokens");
        int kvDim = _kvHeads * _headDim;
        int half = _pairBytes / 2;
        for (int t = 0; t < real; t++)
        {
            for (int h = 0; h < _kvHeads; h++)
            {
                var pair = _host.Slice(HostOffset(layer * _kvHeads + h, Length + t), _pairBytes);
                F16.QuantizeRow(keys.Slice(t * kvDim + h * _headDim, _headDim), pair[..half]);
                F16.QuantizeRow(values.Slice(t * kvDim + h * _headDim, _headDim), pair[half..]);
                // The residual keeps exactly what the host tier keeps (F16 values), see the remarks.
                F16.DequantizeRow(pair[..half], _rowK.AsSpan(h * _headDim, _headDim));
                F16.DequantizeRow(pair[half..], _rowV.AsSpan(h * _headDim, _headDim));
            }
            Counters.HostBytesWritten += (long)_kvHeads * _pairBytes;
            _copy.Add(layer, _rowK, _rowV);
        }
        if (_stepSpeculative == 1)
        {
            keys.Slice(real * kvDim, kvDim).CopyTo(_specK);
            values.Slice(real * kvDim, kvDim).CopyTo(_specV);
        }
        _pending[layer] = real;
    }

    /// <summary>The background worker: copies each queued layer's speculative top-k from the host tier into the staging half being filled.</summary>
    void PrefetchLoop()
    {
        foreach (int layer in _jobs.GetConsumingEnumerable())
        {
            long start = Stopwatch.GetTimestamp();
            var next = _staging[layer][1 - _current[layer]];
            long bytes = 0;
            int d = _headDim;
            for (int h = 0; h < _kvHeads; h++)
            {
                int slot = layer * _kvHeads + h;
                for (int i = 0; i < next.Counts[h]; i++)
                    ReadPair(slot, next.Positions[h * _k + i], next.K.AsSpan((h * _k + i) * d, d), next.V.AsSpan((h * _k + i) * d, d));
                bytes += (long)next.Counts[h] * _pairBytes;
                Counters.PrefetchedPairs += next.Counts[h];
            }
            _link.WaitForTransfer(bytes, start);
            Interlocked.Add(ref Counters.HostBytesRead, bytes);
            Counters.PrefetchTicks += Stopwatch.GetTimestamp() - start;
            _jobDone[layer].Set();
        }
    }

    public void Commit(int count)
    {
        for (int l = 0; l < _layers; l++)
        {
            if (_pending[l] != count)
                throw new InvalidOperationException($"commit of {count} tokens, but layer {l} holds {_pending[l]} uncommitted");
            _pending[l] = 0;
        }
        Length += count;
        _stepRows = _stepSpeculative = 0;
    }

    public void Clear()
    {
        for (int l = 0; l < _layers; l++)
        {
            if (_jobPending[l]) _jobDone[l].Wait();
            _jobPending[l] = false;
            Array.Clear(_staging[l][0].Counts);
            Array.Clear(_staging[l][1].Counts);
        }
        Length = 0;
        _copy.Clear();
        Array.Clear(_pending);
        _stepRows = _stepSpeculative = 0;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _jobs.CompleteAdding();
        _worker.Join();
        _jobs.Dispose();
        foreach (var done in _jobDone) done.Dispose();
        _host.Dispose();
    }
}
