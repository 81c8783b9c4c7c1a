using SpeCache.KvCache.Policies.Full;
using SpeCache.Transformer;

namespace SpeCache.KvCache;

/// <summary>Which KV cache policy a sequence uses, and its options.</summary>
public sealed record KvCacheOptions
{
    /// <summary>Policy name: full (more arrive with the SpeCache work).</summary>
    public string Policy { get; init; } = "full";
}

/// <summary>The registry of KV cache policies by name: adding a policy means adding one line here.</summary>
public static class KvCacheFactory
{
    public static IReadOnlyList<string> Policies { get; } = ["full"];

    public static IKvCache Create(KvCacheOptions options, ModelConfig config, int contextLength) => options.Policy switch
    {
        "full" => new FullKvCache(config, contextLength),
        _ => throw new ArgumentException($"unknown KV cache policy '{options.Policy}' (available: {string.Join(", ", Policies)})"),
    };

    /// <summary>Bytes one token's keys and values take in the fast tier, over all layers.</summary>
    public static long FastTierBytesPerToken(KvCacheOptions options, ModelConfig config) => options.Policy switch
    {
        "full" => 2L * config.LayerCount * config.KvDim * sizeof(ushort),
        _ => throw new ArgumentException($"unknown KV cache policy '{options.Policy}' (available: {string.Join(", ", Policies)})"),
    };
}
