using SpeCache.KvCache.Tiers;

namespace SpeCache.KvCache.Policies.SpeCache;

/// <summary>What a real row does with a top-k position the speculative row did not prefetch.</summary>
public enum MissPolicy
{
    /// <summary>Copy the 16-bit pair from the host tier now, stalling the step (exact, costs latency).</summary>
    Fetch,
    /// <summary>Attend to the position through its low-bit copy (no stall, less exact).</summary>
    LowBit,
}

/// <summary>Settings of the specache policy.</summary>
/// <param name="Bits">Bits per code of the low-bit copy in the fast tier (1 or 2; 4 for comparisons).</param>
/// <param name="GroupSize">KIVI group size, 32 or 64.</param>
/// <param name="ResidualLength">Newest tokens kept at full precision in the fast tier (a multiple of the group).</param>
/// <param name="TopK">16-bit pairs attended per layer per KV head each step.</param>
/// <param name="Speculative">Decode a speculative row beside the real one and prefetch from it (true), fetch every
/// top-k pair on demand (false), or decide (null): on when the host tier is slow, a disk tier or a modelled link. With
/// the host tier in the same RAM there is no latency to hide, and on a CPU the extra row doubles the decode's compute
/// (measured 7.5 against 18.8 tokens/s on a Llama-3.2-1B shape at depth 0).</param>
/// <param name="Miss">What a real row does with a top-k position that was not prefetched.</param>
/// <param name="HostTier">Where the 16-bit cache lives: "ram", or "disk:&lt;folder or file&gt;" for a memory-mapped file.</param>
/// <param name="MeasureRecall">Also score every step exactly against the 16-bit keys to measure top-k recall (slow; for evaluation).</param>
public sealed record SpeCacheOptions(
    int Bits = 2,
    int GroupSize = 32,
    int ResidualLength = 64,
    int TopK = 64,
    bool? Speculative = null,
    MissPolicy Miss = MissPolicy.Fetch,
    string HostTier = "ram",
    bool MeasureRecall = false)
{
    /// <summary>The modelled link between the tiers; unlimited unless asked for.</summary>
    public Interconnect Interconnect { get; init; } = Interconnect.Unlimited;

    /// <summary>Whether the speculative row runs, <see cref="Speculative"/> resolved.</summary>
    public bool SpeculativeRowEnabled => Speculative ?? (HostTier != "ram" || !Interconnect.IsUnlimited);

    public void Validate()
    {
        if (Bits is not (1 or 2 or 4)) throw new ArgumentException($"specache bits must be 1, 2 or 4 (got {Bits})");
        if (GroupSize is not (32 or 64)) throw new ArgumentException($"specache group size must be 32 or 64 (got {GroupSize})");
        if (ResidualLength < GroupSize || ResidualLength % GroupSize != 0)
            throw new ArgumentException($"specache residual length must be a positive multiple of the group size {GroupSize} (got {ResidualLength})");
        if (TopK < 1 || TopK > 65536) throw new ArgumentException($"specache top-k must be between 1 and 65536 (got {TopK})");
        if (HostTier != "ram" && !(HostTier.StartsWith("disk:", StringComparison.Ordinal) && HostTier.Length > 5))
            throw new ArgumentException($"host tier must be 'ram' or 'disk:<folder or file>' (got '{HostTier}')");
    }
}
