namespace SpeCache.Bench;

/// <summary>What one bench run measures; the options of <c>specache bench</c>.</summary>
public sealed record BenchSettings
{
    public required string ModelPath { get; init; }
    public int PromptTokens { get; init; } = 512;
    public int DecodeTokens { get; init; } = 32;
    public IReadOnlyList<int> Depths { get; init; } = [0, 4096, 16384, 32768];
    /// <summary>Our KV policies to measure, each a <see cref="Eval.PolicySpec"/> (default: every policy in KvCacheFactory.Policies).</summary>
    public IReadOnlyList<string> Policies { get; init; } = [];
    /// <summary>The peer's cache types to measure (null: all it offers).</summary>
    public IReadOnlyList<string>? PeerCacheTypes { get; init; }
    /// <summary>
    /// Times every engine is measured. Each figure reported is the median over the rounds, and a
    /// ratio the median of each round's own ratio, so a machine whose speed drifts (shared cores and
    /// memory) moves both sides of a ratio alike.
    /// </summary>
    public int Rounds { get; init; } = 1;
    /// <summary>Our engine reads weights from the file's memory map (EngineOptions.MapWeights).</summary>
    public bool MapWeights { get; init; }
    /// <summary>The peer reads its weights into its own buffers instead of mapping the file (llama.cpp's --no-mmap).</summary>
    public bool PeerReadsWeights { get; init; }
    /// <summary>
    /// Above 0: the peer fills its context to each depth in independent chunks of this many tokens, joined
    /// into one sequence before anything is timed (see LlamaCppModel.AppendInChunks): the timed steps do
    /// the same work as after one long prefill, but the fill takes linear instead of quadratic time.
    /// 0: one long prefill, as our engine always does.
    /// </summary>
    public int PeerFillChunk { get; init; }
    public int Threads { get; init; } = 1;
    /// <summary>Seed of the random tokens that fill the context and make the prompt.</summary>
    public int Seed { get; init; }
    /// <summary>Bytes of each STREAM array.</summary>
    public long StreamArrayBytes { get; init; } = 128L << 20;

    /// <summary>Context every engine allocates: the deepest depth plus one measurement's tokens.</summary>
    public int ContextLength => Depths.Max() + PromptTokens + DecodeTokens + 1;
}

/// <summary>One engine and KV cache at one depth.</summary>
/// <param name="Engine">"SpeCache" or a peer's name.</param>
/// <param name="Kv">Our policy name or the peer's cache type.</param>
/// <param name="Depth">Tokens in the context before the prompt.</param>
/// <param name="WeightBytesPerToken">Weight bytes a decode step reads (every matrix once; the embedding row is negligible).</param>
/// <param name="KvBytesPerToken">
/// Estimated KV bytes a decode step reads: the cache's fast-tier bytes per stored token times the mean
/// context length during decode (depth + prompt + half the decoded tokens). An estimate: policies that
/// read less than their whole fast tier per step (or more from the host tier) differ from it.
/// </param>
/// <param name="BandwidthBytesPerSecond">
/// The memory bandwidth this row's roofline is taken against: the higher of the STREAM triads measured just
/// before and just after its timed prefill and decode (<see cref="MemoryBandwidth.Around{T}"/>); over several
/// rounds, the highest of its rounds'.
/// </param>
/// <param name="DecodeRatio">Decode tokens/s ÷ the baseline row's (the peer's F16 cache at this depth); null without a peer.</param>
/// <param name="PrefillRatio">The same for prefill.</param>
/// <param name="DecodeTokensPerSecondByRound">With several rounds: each round's decode tokens/s, of which the row holds the median.</param>
/// <param name="PrefillTokensPerSecondByRound">The same for prefill.</param>
public sealed record BenchRow(
    string Engine, string Kv, int Depth, int PromptTokens, double PrefillTokensPerSecond,
    int DecodeTokens, double DecodeTokensPerSecond, long WeightBytesPerToken, long KvBytesPerToken,
    double BandwidthBytesPerSecond, double? DecodeRatio = null, double? PrefillRatio = null,
    IReadOnlyList<double>? DecodeTokensPerSecondByRound = null, IReadOnlyList<double>? PrefillTokensPerSecondByRound = null)
{
    public long BytesPerToken => WeightBytesPerToken + KvBytesPerToken;

    /// <summary>Bytes a second the decode read: decode tokens/s × bytes per token.</summary>
    public double ReadBytesPerSecond => DecodeTokensPerSecond * BytesPerToken;

    /// <summary><see cref="ReadBytesPerSecond"/> ÷ <see cref="BandwidthBytesPerSecond"/>.</summary>
    public double RooflineFraction => ReadBytesPerSecond / BandwidthBytesPerSecond;

    /// <summary>Label of the row's line in the plot and table.</summary>
    public string Series => $"{Engine} {Kv}";
}

/// <summary>A whole run: where, what, and every row.</summary>
/// <param name="TriadBytesPerSecond">Every STREAM triad measured in the run, in bytes/s, in the order taken (two beside each row).</param>
/// <param name="Complete">False in a report written while the run was going: it holds the rows measured by then.</param>
public sealed record BenchReport(
    DateTimeOffset Date, string Model, string ModelFile, long ModelFileBytes, string Machine, int Threads,
    int PromptTokens, int DecodeTokens, IReadOnlyList<int> Depths, IReadOnlyList<double> TriadBytesPerSecond,
    string? Baseline, IReadOnlyList<BenchRow> Rows, int Rounds = 1, string? WeightMemory = null, bool Complete = true,
    string? ContextFill = null);
