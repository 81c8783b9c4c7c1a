using SpeCache.KvCache.Policies.Eviction;
using SpeCache.Transformer;

namespace SpeCache.KvCache.Policies.H2o;

/// <summary>
/// H2O settings: the recent window, the heavy hitters kept besides it, and how many rows one call
/// may stage. Under a fast-tier budget the kept count comes from the budget, split between window
/// and heavy hitters in the ratio of these two (1:1 by default, as in the paper).
/// </summary>
public sealed record H2oOptions(int Window = 128, int HeavyHitters = 128, int StagingRows = 64)
{
    public void Validate()
    {
        if (Window < 1) throw new ArgumentException($"h2o window must be at least 1 token (got {Window})");
        if (HeavyHitters < 0) throw new ArgumentException($"h2o heavy hitters must not be negative (got {HeavyHitters})");
        if (StagingRows < 1) throw new ArgumentException($"h2o staging rows must be at least 1 (got {StagingRows})");
    }
}

/// <summary>
/// Heavy-Hitter Oracle (Zhang et al., 2023): per layer and KV head, keeps the recent window plus
/// the tokens with the largest attention probability accumulated so far (summed over the query
/// heads that share the KV head and over every query row since the token arrived). When full, the
/// kept token outside the window with the least accumulated score is evicted, one per new token.
/// </summary>
public sealed class H2oKvCache : SlotKvCache
{
    readonly int _window;
    readonly float[][] _scores;   // per layer: (kvHeads, SlotsPerHead) accumulated attention
    readonly int[][] _positions;  // per layer: (kvHeads, SlotsPerHead) position of each slot's token

    public H2oKvCache(ModelConfig config, int capacity, H2oOptions options, long? budgetBytes = null)
        : base(config, capacity, KeptSlotsFor(config, capacity, options, budgetBytes), Math.Min(options.StagingRows, capacity))
    {
        _window = budgetBytes is null
            ? Math.Min(options.Window, KeptSlots)
            : Math.Clamp((int)((long)KeptSlots * options.Window / (options.Window + options.HeavyHitters)), 1, KeptSlots);
        _scores = new float[Layers][];
        _positions = new int[Layers][];
        for (int l = 0; l < Layers; l++)
        {
            _scores[l] = new float[KvHeads * SlotsPerHead];
            _positions[l] = new int[KvHeads * SlotsPerHead];
        }
    }

    public int Window => _window;
    public int HeavyHitters => KeptSlots - _window;

    /// <summary>Fast-tier bytes of one slot over all layers and KV heads: F16 key and value, score, position.</summary>
    public static long SlotBytesWithScores(ModelConfig config) =>
        SlotBytes(config) + (long)config.LayerCount * config.KvHeadCount * (sizeof(float) + sizeof(int));

    /// <summary>Fast-tier bytes of a cache of <paramref name="capacity"/> tokens: its kept and staging slots with their scores.</summary>
    public static long FastTierBytes(ModelConfig config, int capacity, H2oOptions options, long? budgetBytes) =>
        (KeptSlotsFor(config, capacity, options, budgetBytes) + Math.Min(options.StagingRows, capacity)) * SlotBytesWithScores(config);

    /// <summary>Kept tokens: window + heavy hitters, or what the budget holds; never more than the context.</summary>
    public static int KeptSlotsFor(ModelConfig config, int capacity, H2oOptions options, long? budgetBytes)
    {
        options.Validate();
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), $"context {capacity} must be positive");
        int staging = Math.Min(options.StagingRows, capacity);
        long kept = (long)options.Window + options.HeavyHitters;
        if (budgetBytes is long budget)
        {
            long slot = SlotBytesWithScores(config);
            kept = budget / slot - staging;
            long needed = options.HeavyHitters > 0 ? 2 : 1;
            if (kept < needed)
                throw new ArgumentException($"a KV budget of {budget:N0} bytes holds {Math.Max(0, budget / slot)} tokens of {slot:N0} bytes, but h2o needs {needed + staging} ({needed} kept, {staging} staging rows)");
        }
        return (int)Math.Min(kept, capacity);
    }

    protected override long MetadataBytes => (long)Layers * KvHeads * SlotsPerHead * (sizeof(float) + sizeof(int));

    protected override Span<float> Accumulator(int layer, int kvHead) => _scores[layer].AsSpan(kvHead * SlotsPerHead, SlotsPerHead);

    protected override void Staged(int layer, int count)
    {
        for (int h = 0; h < KvHeads; h++)
        {
            int staging = h * SlotsPerHead + KeptSlots;
            _scores[layer].AsSpan(staging, count).Clear();
            for (int r = 0; r < count; r++) _positions[layer][staging + r] = Length + r;
        }
    }

    protected override void Admit(int layer, int count)
    {
        int n = Kept[layer];
        for (int h = 0; h < KvHeads; h++)
        {
            var scores = _scores[layer].AsSpan(h * SlotsPerHead, SlotsPerHead);
            var positions = _positions[layer].AsSpan(h * SlotsPerHead, SlotsPerHead);
            n = Kept[layer];
            for (int r = 0; r < count; r++)
            {
                int from = KeptSlots + r, to;
                if (n < KeptSlots)
                    to = n++;
                else
                {
                    // The new token is the newest of the window; evict the lightest kept token older
                    // than the window. One exists: at most window - 1 kept tokens are in the window.
                    int windowStart = positions[from] + 1 - _window;
                    to = -1;
                    float least = float.PositiveInfinity;
                    for (int s = 0; s < KeptSlots; s++)
                        if (positions[s] < windowStart && scores[s] < least)
                        {
                            least = scores[s];
                            to = s;
                        }
                    if (to < 0) throw new InvalidOperationException("h2o found no token outside the window to evict");
                }
                MoveSlot(layer, h, from, to);
                scores[to] = scores[from];
                positions[to] = positions[from];
            }
        }
        Kept[layer] = n;
    }

    /// <summary>The positions kept in <paramref name="layer"/> for <paramref name="kvHead"/>, in slot order (for tests and inspection).</summary>
    public int[] KeptPositions(int layer, int kvHead) =>
        _positions[layer].AsSpan(kvHead * SlotsPerHead, Kept[layer]).ToArray();
}
