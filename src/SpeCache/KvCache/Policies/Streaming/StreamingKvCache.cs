using SpeCache.KvCache.Policies.Eviction;
using SpeCache.Transformer;

namespace SpeCache.KvCache.Policies.Streaming;

/// <summary>
/// StreamingLLM settings: attention sinks (the first tokens, always kept), the recent window, and
/// how many rows one call may stage (the model prefills in chunks of 64). Under a fast-tier budget
/// the window is whatever the budget leaves after the sinks and the staging rows.
/// </summary>
public sealed record StreamingOptions(int Sinks = 4, int Window = 252, int StagingRows = 64)
{
    public void Validate()
    {
        if (Sinks < 0) throw new ArgumentException($"streaming sinks must not be negative (got {Sinks})");
        if (Window < 1) throw new ArgumentException($"streaming window must be at least 1 token (got {Window})");
        if (StagingRows < 1) throw new ArgumentException($"streaming staging rows must be at least 1 (got {StagingRows})");
    }
}

/// <summary>
/// StreamingLLM (Xiao et al., 2023): keeps the first <c>Sinks</c> tokens, which soak up attention
/// mass whatever their content, and the most recent <c>Window</c> tokens; everything between is
/// dropped. The same positions are kept in every layer and head. The window is a ring of slots,
/// so admitting a token overwrites the oldest one in place.
/// </summary>
public sealed class StreamingKvCache : SlotKvCache
{
    readonly int _sinks, _window;
    readonly int[] _ringHead; // per layer: the window slot (from 0) holding the oldest recent token

    public StreamingKvCache(ModelConfig config, int capacity, StreamingOptions options, long? budgetBytes = null)
        : base(config, capacity, KeptSlotsFor(config, capacity, options, budgetBytes), Math.Min(options.StagingRows, capacity))
    {
        _sinks = Math.Min(options.Sinks, KeptSlots);
        _window = KeptSlots - _sinks;
        _ringHead = new int[Layers];
    }

    public int Sinks => _sinks;
    public int Window => _window;

    /// <summary>Fast-tier bytes of a cache of <paramref name="capacity"/> tokens: its kept and staging slots.</summary>
    public static long FastTierBytes(ModelConfig config, int capacity, StreamingOptions options, long? budgetBytes) =>
        (KeptSlotsFor(config, capacity, options, budgetBytes) + Math.Min(options.StagingRows, capacity)) * SlotBytes(config);

    /// <summary>Kept tokens: sinks + window, or what the budget holds; never more than the context.</summary>
    public static int KeptSlotsFor(ModelConfig config, int capacity, StreamingOptions options, long? budgetBytes)
    {
        options.Validate();
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), $"context {capacity} must be positive");
        int staging = Math.Min(options.StagingRows, capacity);
        long kept = (long)options.Sinks + options.Window;
        if (budgetBytes is long budget)
        {
            long slot = SlotBytes(config);
            kept = budget / slot - staging;
            long needed = options.Sinks + 1L;
            if (kept < needed)
                throw new ArgumentException($"a KV budget of {budget:N0} bytes holds {Math.Max(0, budget / slot)} tokens of {slot:N0} bytes, but streaming needs {needed + staging} ({options.Sinks} sinks, 1 recent, {staging} staging rows)");
        }
        return (int)Math.Min(kept, capacity);
    }

    protected override void Admit(int layer, int count)
    {
        int n = Kept[layer];
        for (int r = 0; r < count; r++)
        {
            int to;
            if (n < KeptSlots)
                to = n++;
            else
            {
                // Full: the token leaving the window is the oldest in the ring; the sinks stay.
                to = _sinks + _ringHead[layer];
                _ringHead[layer] = (_ringHead[layer] + 1) % _window;
            }
            for (int h = 0; h < KvHeads; h++) MoveSlot(layer, h, KeptSlots + r, to);
        }
        Kept[layer] = n;
    }

    protected override void Cleared() => Array.Clear(_ringHead);
}
