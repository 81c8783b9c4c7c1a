namespace SpeCache.Generation;

/// <summary>
/// How the next token is chosen. Defaults are llama.cpp's (common/common.h): temperature 0.8,
/// top-k 40, top-p 0.95, min-p 0.05, no repetition penalty, penalty window 64.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Divides the logits; 0 means greedy (always the most likely token). Must be &gt;= 0.</summary>
    public float Temperature { get; init; } = 0.8f;

    /// <summary>Keep only the k most likely tokens; 0 disables. Must be &gt;= 0.</summary>
    public int TopK { get; init; } = 40;

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p; 1 disables. In (0, 1].</summary>
    public float TopP { get; init; } = 0.95f;

    /// <summary>Drop tokens less likely than min_p times the most likely one; 0 disables. In [0, 1].</summary>
    public float MinP { get; init; } = 0.05f;

    /// <summary>
    /// llama.cpp's repeat penalty: a token seen in the window has a positive logit divided by this and a
    /// negative one multiplied by it, once however often it occurred. 1 disables. Must be &gt; 0.
    /// </summary>
    public float RepetitionPenalty { get; init; } = 1.0f;

    /// <summary>How many of the most recent tokens the penalty looks at; 0 disables, -1 means all given.</summary>
    public int RepetitionLastN { get; init; } = 64;

    /// <summary>Seed for the random draws; null picks one at random (see <see cref="Sampler.Seed"/>).</summary>
    public ulong? Seed { get; init; }

    /// <summary>The greedy choice: temperature 0, everything else off.</summary>
    public static SamplingOptions Greedy { get; } = new() { Temperature = 0, TopK = 0, TopP = 1, MinP = 0 };

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first bad value.</summary>
    public void Validate()
    {
        // Written as negated comparisons so that NaN is rejected too.
        if (!(Temperature >= 0))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "temperature must be >= 0 (0 means greedy)");
        if (TopK < 0)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "top_k must be >= 0 (0 disables it)");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "top_p must be in (0, 1] (1 disables it)");
        if (!(MinP >= 0 && MinP <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinP), MinP, "min_p must be in [0, 1] (0 disables it)");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty))
            throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "repetition penalty must be > 0 and finite (1 disables it)");
        if (RepetitionLastN < -1)
            throw new ArgumentOutOfRangeException(nameof(RepetitionLastN), RepetitionLastN, "repetition window must be >= -1 (0 disables, -1 means all tokens given)");
    }
}
