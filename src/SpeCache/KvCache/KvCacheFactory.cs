using SpeCache.KvCache.Policies.Eviction;
using SpeCache.KvCache.Policies.Full;
using SpeCache.KvCache.Policies.H2o;
using SpeCache.KvCache.Policies.Kivi;
using SpeCache.KvCache.Policies.SpeCache;
using SpeCache.KvCache.Quantization;
using SpeCache.KvCache.Tiers;
using SpeCache.KvCache.Policies.Streaming;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.KvCache;

/// <summary>Which KV cache policy a sequence uses, and its options.</summary>
public sealed record KvCacheOptions
{
    /// <summary>Policy name: one of <see cref="KvCacheFactory.Policies"/>.</summary>
    public string Policy { get; init; } = "full";
    /// <summary>
    /// Most bytes the fast tier may hold for this sequence (null: no limit). A cache that would not
    /// fit fails when it is created, before any work starts; eviction policies size themselves to it.
    /// </summary>
    public long? FastTierBudgetBytes { get; init; }
    /// <summary>Settings of the kivi policy.</summary>
    public KiviOptions Kivi { get; init; } = new();
    /// <summary>Settings of the specache policy.</summary>
    public SpeCacheOptions SpeCache { get; init; } = new();
    /// <summary>Element type of the full policy's cache (llama.cpp's cache types: f16, bf16, q8_0, q4_0, f32).</summary>
    public FullKvElement FullElement { get; init; } = FullKvElement.F16;
    /// <summary>Settings of the streaming (attention sinks + recent window) policy.</summary>
    public StreamingOptions Streaming { get; init; } = new();
    /// <summary>Settings of the h2o (heavy hitters + recent window) policy.</summary>
    public H2oOptions H2o { get; init; } = new();
}

/// <summary>The registry of KV cache policies by name: adding a policy means adding its lines here.</summary>
public static class KvCacheFactory
{
    public static IReadOnlyList<string> Policies { get; } = ["full", "kivi", "specache", "streaming", "h2o"];

    /// <param name="threads">
    /// The threads the cache's attention spreads over: an engine's caches take its backend's
    /// (<see cref="IComputeBackend.Threads"/>), so attention keeps to the thread count the user
    /// gave and runs on the matmuls' threads; null: the .NET thread pool, one thread per processor.
    /// </param>
    public static IKvCache Create(KvCacheOptions options, ModelConfig config, int contextLength, IWorkerThreads? threads = null)
    {
        CheckSupports(options, config);
        var cache = CreatePolicy(options, config, contextLength, threads);
        if (options.FastTierBudgetBytes is long budget && cache.Memory.FastTierBytes > budget)
        {
            long needed = cache.Memory.FastTierBytes;
            cache.Dispose();
            throw new ArgumentException($"the {options.Policy} KV cache needs {ByteSize.Format(needed)} of fast tier for a context of {contextLength} tokens, more than the budget of {ByteSize.Format(budget)}");
        }
        return cache;
    }

    /// <summary>
    /// Fails in one line when the policy cannot hold this model's keys and values (the low-bit
    /// formats tile a head in groups of channels; the block cache types tile a KV row in blocks),
    /// so that a server refuses such a request before it starts rather than in the middle of its stream.
    /// </summary>
    public static KvCacheOptions CheckSupports(KvCacheOptions options, ModelConfig config)
    {
        int head = config.HeadDim;
        if (options.Policy is "kivi" or "specache")
        {
            int group = options.Policy == "kivi" ? options.Kivi.GroupSize : options.SpeCache.GroupSize;
            if (!KiviFormat.HeadFits(head))
                throw new ArgumentException($"the {options.Policy} cache needs a head size that is a multiple of {KiviFormat.HeadDimMultiple} up to {KiviFormat.MaxHeadDim} (this model's is {head})");
            if (!KiviFormat.ValueGroupsTile(head, group))
                throw new ArgumentException($"the {options.Policy} cache's value groups of {group} channels do not tile this model's heads of {head}");
        }
        if (options.Policy == "full" && FullKvCache.RowMismatch(options.FullElement, config.KvDim) is { } why)
            throw new ArgumentException(why);
        return options;
    }

    static IKvCache CreatePolicy(KvCacheOptions options, ModelConfig config, int contextLength, IWorkerThreads? threads) => options.Policy switch
    {
        "full" => new FullKvCache(config, contextLength, options.FullElement, threads),
        "kivi" => new KiviKvCache(config, contextLength, options.Kivi, threads),
        "specache" => new SpeCacheKvCache(config, contextLength, options.SpeCache, options.FastTierBudgetBytes, threads),
        "streaming" => new StreamingKvCache(config, contextLength, options.Streaming, options.FastTierBudgetBytes),
        "h2o" => new H2oKvCache(config, contextLength, options.H2o, options.FastTierBudgetBytes),
        _ => throw Unknown(options.Policy),
    };

    /// <summary>
    /// Exact fast-tier bytes a cache of <paramref name="capacity"/> tokens in this policy takes
    /// (its <see cref="IKvCache.Memory"/>), worked out without allocating it, so that a request can
    /// be admitted or refused before its memory exists.
    /// </summary>
    public static long FastTierBytes(KvCacheOptions options, ModelConfig config, int capacity) => CheckSupports(options, config).Policy switch
    {
        "full" => FullKvCache.FastTierBytes(config, capacity, options.FullElement),
        "kivi" => LowBitCopy.BytesFor(config, capacity, options.Kivi.Bits, options.Kivi.GroupSize, options.Kivi.ResidualLength),
        "specache" => SpeCacheKvCache.FastTierBytes(config, capacity, options.SpeCache),
        "streaming" => StreamingKvCache.FastTierBytes(config, capacity, options.Streaming, options.FastTierBudgetBytes),
        "h2o" => H2oKvCache.FastTierBytes(config, capacity, options.H2o, options.FastTierBudgetBytes),
        _ => throw Unknown(options.Policy),
    };

    /// <summary>Bytes one token's keys and values take in the fast tier, over all layers.</summary>
    public static long FastTierBytesPerToken(KvCacheOptions options, ModelConfig config) => options.Policy switch
    {
        "full" => 2L * config.LayerCount * FullKvCache.RowBytes(options.FullElement, config.KvDim),
        "kivi" => KiviKvCache.BytesPerToken(config, options.Kivi),
        "specache" => SpeCacheKvCache.BytesPerToken(config, options.SpeCache),
        // Per kept token; eviction bounds the token count instead of shrinking each token.
        "streaming" or "h2o" => SlotKvCache.SlotBytes(config),
        _ => throw Unknown(options.Policy),
    };

    static ArgumentException Unknown(string policy) =>
        new($"unknown KV cache policy '{policy}' (available: {string.Join(", ", Policies)})");
}
