namespace SpeCache.KvCache;

/// <summary>
/// What a KV cache did, counted as it ran: bytes read per tier, top-k prefetch hits and misses,
/// time the prefetch was hidden behind compute versus waited on, speculative-token accuracy.
/// Policies fill in what applies to them; <c>--stats</c> prints it and writes it as JSON.
/// </summary>
/// <remarks>Counters are plain fields: a cache runs one step at a time, and the prefetch worker only
/// touches its own (<see cref="PrefetchTicks"/>, <see cref="PrefetchedPairs"/>) between hand-offs that
/// are ordered by the job's completion event.</remarks>
public sealed class KvCounters
{
    /// <summary>Decode steps that used the cache (one real token each).</summary>
    public long DecodeSteps;
    /// <summary>Bytes the attention read from the fast tier during decode steps.</summary>
    public long FastBytesRead;
    /// <summary>Bytes copied from the host tier to the fast tier (prefetch and on-demand).</summary>
    public long HostBytesRead;
    /// <summary>Bytes written to the host tier (every stored token's 16-bit K and V).</summary>
    public long HostBytesWritten;
    /// <summary>Top-k positions the real rows asked for, over layers and KV heads.</summary>
    public long TopKRequested;
    /// <summary>Of those, found in the staging pool because the speculative row had prefetched them.</summary>
    public long PrefetchHits;
    /// <summary>Of those, not prefetched: fetched on demand or served low-bit (see <see cref="MissesServedLowBit"/>).</summary>
    public long Misses;
    /// <summary>Misses answered from the low-bit copy instead of a fetch.</summary>
    public long MissesServedLowBit;
    /// <summary>Pairs the prefetch worker copied.</summary>
    public long PrefetchedPairs;
    /// <summary>Stopwatch ticks the prefetch worker spent on transfers (copy plus modelled link time).</summary>
    public long PrefetchTicks;
    /// <summary>Stopwatch ticks real rows waited for a prefetch to finish.</summary>
    public long PrefetchWaitTicks;
    /// <summary>Stopwatch ticks spent fetching misses on demand (compute stalls).</summary>
    public long OnDemandTicks;
    /// <summary>Sum over checks of |approximate top-k ∩ exact top-k| / k, and how many checks.</summary>
    public double RecallSum;
    public long RecallChecks;
    /// <summary>Speculative tokens checked against the token that was then decoded, and how many matched.</summary>
    public long SpeculativeGuesses;
    public long SpeculativeCorrect;

    public double PrefetchHitRate => TopKRequested == 0 ? double.NaN : (double)PrefetchHits / TopKRequested;
    public double TopKRecall => RecallChecks == 0 ? double.NaN : RecallSum / RecallChecks;
    public double SpeculativeAccuracy => SpeculativeGuesses == 0 ? double.NaN : (double)SpeculativeCorrect / SpeculativeGuesses;
    public TimeSpan PrefetchTime => TimeSpan.FromSeconds(PrefetchTicks / (double)System.Diagnostics.Stopwatch.Frequency);
    public TimeSpan PrefetchWaitTime => TimeSpan.FromSeconds(PrefetchWaitTicks / (double)System.Diagnostics.Stopwatch.Frequency);
    public TimeSpan OnDemandTime => TimeSpan.FromSeconds(OnDemandTicks / (double)System.Diagnostics.Stopwatch.Frequency);

    /// <summary>Fraction of the prefetch transfer time that overlapped compute instead of being waited on.</summary>
    public double HiddenFraction => PrefetchTicks == 0 ? double.NaN : Math.Clamp(1 - (double)PrefetchWaitTicks / PrefetchTicks, 0, 1);

    public double FastBytesPerStep => DecodeSteps == 0 ? double.NaN : (double)FastBytesRead / DecodeSteps;
    public double HostBytesPerStep => DecodeSteps == 0 ? double.NaN : (double)HostBytesRead / DecodeSteps;

    public void Reset()
    {
        DecodeSteps = FastBytesRead = HostBytesRead = HostBytesWritten = 0;
        TopKRequested = PrefetchHits = Misses = MissesServedLowBit = PrefetchedPairs = 0;
        PrefetchTicks = PrefetchWaitTicks = OnDemandTicks = 0;
        RecallSum = 0;
        RecallChecks = SpeculativeGuesses = SpeculativeCorrect = 0;
    }
}
