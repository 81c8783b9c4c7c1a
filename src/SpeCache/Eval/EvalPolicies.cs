using System.Globalization;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Eval;

/// <summary>
/// The policy sets an evaluation runs when none are given: the comparison the paper makes (KIVI and
/// SpeCache at 2 and 1 bit, SpeCache at several k) plus the eviction baselines at a matched budget,
/// that is, given exactly the fast-tier bytes specache 1-bit holds for the same model and context,
/// so every row of a table costs the same fast memory unless it says otherwise.
/// </summary>
public static class EvalPolicies
{
    /// <summary>The policy whose fast-tier bytes the eviction baselines get.</summary>
    public const string BudgetReference = "specache:bits=1,group=64,k=8";

    /// <summary>Fidelity on a real model: SpeCache at k = 4, 8, 32 for 1 and 2 bits (the KL-versus-k curves), KIVI, matched baselines.</summary>
    public static IReadOnlyList<string> Fidelity(ModelConfig config, int contextLength) =>
    [
        "kivi:bits=2,group=32", "kivi:bits=1,group=64",
        "specache:bits=2,group=32,k=4,recall=on,spec=on", "specache:bits=2,group=32,k=8,recall=on,spec=on", "specache:bits=2,group=32,k=32,recall=on,spec=on",
        "specache:bits=1,group=64,k=4,recall=on,spec=on", "specache:bits=1,group=64,k=8,recall=on,spec=on", "specache:bits=1,group=64,k=32,recall=on,spec=on",
        .. Matched(config, contextLength),
    ];

    /// <summary>Retrieval on long contexts: the paper's k = 64 at both bit widths, KIVI, matched baselines.</summary>
    public static IReadOnlyList<string> Retrieval(ModelConfig config, int contextLength) =>
    [
        "full", "kivi:bits=2,group=32", "kivi:bits=1,group=64",
        "specache:bits=2,group=32,k=64", "specache:bits=1,group=64,k=64",
        .. Matched(config, contextLength, "specache:bits=1,group=64,k=64"),
    ];

    /// <summary>streaming and h2o given the fast-tier bytes of <paramref name="reference"/> on this model and context.</summary>
    public static IReadOnlyList<string> Matched(ModelConfig config, int contextLength, string reference = BudgetReference)
    {
        long bytes = FastTierBytes(reference, config, contextLength);
        string budget = bytes.ToString(CultureInfo.InvariantCulture);
        return [$"streaming:budget={budget}", $"h2o:budget={budget}"];
    }

    /// <summary>The fast-tier bytes a policy holds for a context of <paramref name="contextLength"/> tokens.</summary>
    public static long FastTierBytes(string spec, ModelConfig config, int contextLength)
    {
        using var cache = KvCacheFactory.Create(PolicySpec.Parse(spec), config, contextLength);
        return cache.Memory.FastTierBytes;
    }
}
