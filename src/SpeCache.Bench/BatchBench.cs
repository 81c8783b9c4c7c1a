using System.Diagnostics;
using System.Numerics.Tensors;
using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Bench;

/// <summary>What <c>specache bench --batch</c> measures.</summary>
public sealed record BatchBenchSettings
{
    public required string ModelPath { get; init; }
    /// <summary>Tokens already in each sequence's context when decoding starts.</summary>
    public int Context { get; init; } = 8192;
    public int DecodeTokens { get; init; } = 16;
    /// <summary>Fast-tier bytes all sequences' KV caches may hold together.</summary>
    public long FastTierBudgetBytes { get; init; } = 1L << 30;
    /// <summary>Largest batch tried, whatever the budget allows (the forward state grows with it).</summary>
    public int MaxBatch { get; init; } = 64;
    public IReadOnlyList<string> Policies { get; init; } = BatchBench.DefaultPolicies;
    public int Threads { get; init; } = 1;
    public int Seed { get; init; }
    /// <summary>Our engine reads weights from the file's memory map (EngineOptions.MapWeights).</summary>
    public bool MapWeights { get; init; }
}

/// <summary>One policy at the budget: how many sequences fit, and how fast they decode together.</summary>
/// <param name="Policy">The policy as given (<see cref="PolicySpec"/> syntax).</param>
/// <param name="FastTierBytesPerSequence">Fast-tier bytes of one sequence's cache at the bench's context.</param>
/// <param name="MaxBatch">Sequences the budget holds (capped by the settings' MaxBatch).</param>
/// <param name="TokensPerSecond">Tokens the whole batch generates per second.</param>
/// <param name="StepMilliseconds">Mean time of one batched decode step.</param>
/// <param name="RatioToFull">Tokens/s over the full policy's row; null without one.</param>
public sealed record BatchRow(string Policy, long FastTierBytesPerSequence, long HostTierBytesPerSequence, int MaxBatch,
    double TokensPerSecond, double StepMilliseconds, double? RatioToFull = null);

public sealed record BatchReport(DateTimeOffset Date, string Model, string Machine, int Threads, int Context, int DecodeTokens,
    long FastTierBudgetBytes, IReadOnlyList<BatchRow> Rows);

/// <summary>
/// Throughput at a fixed fast-tier budget, as the SpeCache paper reports it: for each policy, the
/// largest batch whose KV caches fit the budget at the given context, and the tokens per second that
/// batch decodes (one forward pass per step for all its sequences, <see cref="LlamaModel.ForwardBatch"/>).
/// <para>
/// The context is made once: one prefill of random tokens, whose keys and values are recorded and
/// then appended into every sequence's cache in that policy (each sequence stores its own copy in
/// its own format; only the prefill compute is shared, which the decode speed does not depend on).
/// Each sequence then decodes from its own random token, greedily.
/// </para>
/// </summary>
public static class BatchBench
{
    public static readonly string[] DefaultPolicies = ["full", "kivi:bits=2", "specache:bits=2", "specache:bits=1,group=64"];

    public static BatchReport Run(BatchBenchSettings settings, Action<string> status)
    {
        foreach (string policy in settings.Policies) PolicySpec.Parse(policy); // bad specs fail before any work
        int capacity = settings.Context + settings.DecodeTokens + DecodeStepper.MaxRows;
        using var engine = Engine.Load(settings.ModelPath, new EngineOptions { Threads = settings.Threads, ContextLength = capacity, MapWeights = settings.MapWeights });
        var model = engine.Model;
        var config = model.Config;

        status($"prefilling the {settings.Context:N0}-token context once");
        var context = RecordedContext.Prefill(model, new TokenSource(settings.Seed, config.VocabSize).Next(settings.Context));

        var rows = new List<BatchRow>();
        foreach (string policy in settings.Policies)
        {
            var options = PolicySpec.Parse(policy);
            long perSequence = KvCacheFactory.FastTierBytes(options, config, capacity);
            int batch = (int)Math.Min(settings.MaxBatch, settings.FastTierBudgetBytes / perSequence);
            if (batch == 0)
            {
                rows.Add(new BatchRow(policy, perSequence, 0, 0, 0, 0));
                continue;
            }
            var caches = new List<IKvCache>();
            try
            {
                for (int i = 0; i < batch; i++)
                {
                    status($"{policy}: filling sequence {i + 1} of {batch}");
                    caches.Add(KvCacheFactory.Create(options, config, capacity, model.Backend.Threads));
                    context.AppendTo(caches[^1]);
                }
                status($"{policy}: decoding {settings.DecodeTokens} tokens in a batch of {batch}");
                var (tokensPerSecond, step) = Decode(model, caches, settings.DecodeTokens, settings.Seed);
                rows.Add(new BatchRow(policy, perSequence, caches[0].Memory.HostTierBytes, batch, tokensPerSecond, step.TotalMilliseconds));
            }
            finally
            {
                foreach (var cache in caches) cache.Dispose();
            }
        }
        var full = rows.FirstOrDefault(r => r.Policy == "full" && r.MaxBatch > 0);
        if (full != null) rows = rows.Select(r => r with { RatioToFull = r.TokensPerSecond / full.TokensPerSecond }).ToList();
        return new BatchReport(DateTimeOffset.UtcNow, Path.GetFileNameWithoutExtension(settings.ModelPath), BenchCommand.MachineDescription(),
            settings.Threads, settings.Context, settings.DecodeTokens, settings.FastTierBudgetBytes, rows);
    }

    /// <summary>Decodes <paramref name="steps"/> batched steps after one untimed warm-up step; returns tokens/s and the mean step time.</summary>
    static (double TokensPerSecond, TimeSpan Step) Decode(LlamaModel model, List<IKvCache> caches, int steps, int seed)
    {
        int batch = caches.Count, vocab = model.Config.VocabSize;
        var state = model.CreateState(DecodeStepper.MaxRows * batch);
        var steppers = caches.Select(c => new DecodeStepper(model, c, state)).ToArray();
        int[] next = new TokenSource(seed + 1, vocab).Next(batch);
        var tokens = new int[state.MaxTokens];
        var sequences = new SequenceRows[batch];
        var clock = new Stopwatch();
        for (int step = 0; step <= steps; step++)
        {
            if (step == 1) clock.Start(); // the first step pays for the speculative pre-decode and warm-up
            int rows = 0;
            for (int i = 0; i < batch; i++)
            {
                sequences[i] = steppers[i].PrepareRows(next[i], tokens.AsSpan(rows));
                rows += sequences[i].Count;
            }
            var logits = model.ForwardBatch(tokens.AsSpan(0, rows), sequences, state);
            int row = 0;
            for (int i = 0; i < batch; i++)
            {
                var own = logits.Slice(row * vocab, sequences[i].OutputRows * vocab);
                row += sequences[i].OutputRows;
                next[i] = TensorPrimitives.IndexOfMax(steppers[i].Accept(own));
            }
        }
        var elapsed = clock.Elapsed;
        return (batch * steps / elapsed.TotalSeconds, elapsed / steps);
    }
}

/// <summary>
/// The keys and values of one prefill, per layer, so that many caches can be given the same context
/// without running the model again: each is appended into a cache the way the forward pass appends them.
/// </summary>
sealed class RecordedContext : IKvCache
{
    const int Chunk = 64; // the forward pass's chunk; eviction policies stage at most this many rows
    readonly float[][] _keys, _values;
    readonly int _kvDim;

    RecordedContext(ModelConfig config, int capacity)
    {
        _kvDim = config.KvDim;
        Capacity = capacity;
        _keys = new float[config.LayerCount][];
        _values = new float[config.LayerCount][];
        for (int l = 0; l < config.LayerCount; l++)
        {
            _keys[l] = new float[(long)capacity * _kvDim];
            _values[l] = new float[(long)capacity * _kvDim];
        }
        _full = new KvCache.Policies.Full.FullKvCache(config, capacity, KvCache.Policies.Full.FullKvElement.F32);
    }

    // The prefill itself needs real attention; an exact F32 cache gives it, and this records beside it.
    readonly IKvCache _full;

    public static RecordedContext Prefill(LlamaModel model, int[] tokens)
    {
        var recording = new RecordedContext(model.Config, tokens.Length);
        var state = model.CreateState(Chunk);
        model.Forward(tokens, recording, state);
        recording._full.Dispose();
        return recording;
    }

    /// <summary>Appends the recorded context to <paramref name="cache"/>, in the forward pass's chunks.</summary>
    public void AppendTo(IKvCache cache)
    {
        for (int start = 0; start < Length; start += Chunk)
        {
            int n = Math.Min(Chunk, Length - start);
            cache.BeginStep(n, 0);
            for (int l = 0; l < _keys.Length; l++)
                cache.Append(l, _keys[l].AsSpan(start * _kvDim, n * _kvDim), _values[l].AsSpan(start * _kvDim, n * _kvDim), n);
            cache.Commit(n);
        }
    }

    public int Length { get; private set; }
    public int Capacity { get; }

    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count)
    {
        keys[..(count * _kvDim)].CopyTo(_keys[layer].AsSpan(Length * _kvDim));
        values[..(count * _kvDim)].CopyTo(_values[layer].AsSpan(Length * _kvDim));
        _full.Append(layer, keys, values, count);
    }

    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count) => _full.Attend(layer, queries, output, count);

    public void Commit(int count)
    {
        _full.Commit(count);
        Length += count;
    }

    public void Clear() => throw new NotSupportedException("a recorded context is kept as it is");

    public KvMemory Memory => new(0, 2L * _keys.Length * Capacity * _kvDim * sizeof(float));

    public void Dispose() => _full.Dispose();
}
