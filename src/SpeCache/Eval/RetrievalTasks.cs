namespace SpeCache.Eval;

/// <summary>
/// One retrieval question: the context (BOS, haystack with needles, then the query token), the
/// answer tokens that must all be the model's top choices, and where their needles are.
/// </summary>
public sealed record RetrievalSample(int[] Tokens, int[] Answers, int[] NeedlePositions)
{
    public int AnswerToken => Answers[0];
    public int NeedlePosition => NeedlePositions[0];
}

/// <summary>The RULER-style question kinds the constructed model can answer by one attention read.</summary>
public enum RetrievalTaskKind
{
    /// <summary>One needle in filler, asked for its value.</summary>
    Single,
    /// <summary>The needle among distractor pairs of other keys (RULER's multi-key NIAH).</summary>
    MultiKey,
    /// <summary>One key given several values in separate needles; every value must be returned (RULER's multi-value NIAH).</summary>
    MultiValue,
}

/// <summary>What a retrieval run asks: the kind, distractor pairs of other keys, and values per key (multi-value).</summary>
public sealed record RetrievalTask(RetrievalTaskKind Kind, int Distractors = 0, int Values = 1)
{
    public string Name => Kind.ToString().ToLowerInvariant();

    public static RetrievalTask Parse(string name, int distractors, int values) => name.Trim().ToLowerInvariant() switch
    {
        "single" => new(RetrievalTaskKind.Single),
        "multikey" => new(RetrievalTaskKind.MultiKey, distractors),
        "multivalue" => new(RetrievalTaskKind.MultiValue, distractors, values),
        // Variable tracking (X1 = v, X2 = X1, ... asked for the last X) needs one attention hop per
        // link of the chain: a query can only read what the tokens it attends to hold, and X2's
        // token holds the name X1, not v. The constructed model has one layer, so it answers one
        // hop; offering the task would measure the model, not the KV policy.
        "vt" or "variable-tracking" => throw new ArgumentException(
            "variable tracking needs one attention layer per hop of the chain, and the constructed retrieval model has one layer; it is not offered"),
        _ => throw new ArgumentException($"unknown retrieval task '{name}' (available: single, multikey, multivalue)"),
    };

    /// <summary>The question for one cell and seed; the same arguments always give the same sample.</summary>
    public RetrievalSample Make(int length, double depth, int seed) => Kind switch
    {
        RetrievalTaskKind.Single => RetrievalTasks.Needle(length, depth, seed),
        RetrievalTaskKind.MultiKey => RetrievalTasks.Needle(length, depth, seed, Distractors),
        RetrievalTaskKind.MultiValue => RetrievalTasks.MultiValue(length, depth, seed, Values, Distractors),
        _ => throw new ArgumentOutOfRangeException(nameof(Kind)),
    };
}

/// <summary>
/// Needle-in-a-haystack and key-value retrieval questions for <see cref="RetrievalModel"/>, generated
/// from a seed: filler tokens, needles P(k, v) (the first at a chosen depth), optionally distractor
/// pairs with other keys, and the query Q(k) last.
/// </summary>
public static class RetrievalTasks
{
    /// <param name="length">Tokens in the whole context, BOS and query included.</param>
    /// <param name="depth">Where the needle sits, 0 (start) to 1 (just before the query).</param>
    /// <param name="distractors">Other key-value pairs spread over the haystack (multi-key retrieval).</param>
    public static RetrievalSample Needle(int length, double depth, int seed, int distractors = 0) =>
        Generate(length, depth, seed, 1, distractors, StableHash(length, depth, seed, distractors, 1));

    /// <summary>
    /// One key holding <paramref name="values"/> different values, each in its own needle: the first
    /// at <paramref name="depth"/>, the others at random places. Asked for the key, the model must
    /// rank all of them above every other token.
    /// </summary>
    public static RetrievalSample MultiValue(int length, double depth, int seed, int values, int distractors = 0)
    {
        if (values < 2 || values > RetrievalModel.Values)
            throw new ArgumentException($"a multi-value question needs 2 to {RetrievalModel.Values} values (got {values})");
        return Generate(length, depth, seed, values, distractors, StableHash(length, depth, seed, distractors, values));
    }

    static RetrievalSample Generate(int length, double depth, int seed, int values, int distractors, int hash)
    {
        if (depth is < 0 or > 1) throw new ArgumentException($"needle depth must be between 0 and 1 (got {depth})");
        if (length < 3 + values + distractors)
            throw new ArgumentException($"a context of {length} tokens has no room for {values} needles and {distractors} distractors");
        if (distractors < 0 || distractors > RetrievalModel.Keys - 1)
            throw new ArgumentException($"{distractors} distractors do not fit {RetrievalModel.Keys - 1} other keys");
        var rnd = new Random(hash & int.MaxValue);
        var tokens = new int[length];
        tokens[0] = RetrievalModel.Bos;
        for (int i = 1; i < length - 1; i++) tokens[i] = RetrievalModel.Filler(rnd.Next(RetrievalModel.Fillers));
        int key = rnd.Next(RetrievalModel.Keys);
        int haystack = length - 2; // positions 1 .. length - 2
        var usedPositions = new HashSet<int>();
        var usedValues = new HashSet<int>();
        var answers = new int[values];
        var positions = new int[values];
        for (int i = 0; i < values; i++)
        {
            int value;
            do value = rnd.Next(RetrievalModel.Values); while (!usedValues.Add(value));
            int at = i == 0 ? 1 + (int)Math.Round(depth * (haystack - 1)) : FreePosition(rnd, haystack, usedPositions);
            usedPositions.Add(at);
            tokens[at] = RetrievalModel.Pair(key, value);
            answers[i] = RetrievalModel.Answer(value);
            positions[i] = at;
        }
        var usedKeys = new HashSet<int> { key };
        for (int d = 0; d < distractors; d++)
        {
            int other;
            do other = rnd.Next(RetrievalModel.Keys); while (!usedKeys.Add(other));
            tokens[FreePosition(rnd, haystack, usedPositions)] = RetrievalModel.Pair(other, rnd.Next(RetrievalModel.Values));
        }
        tokens[^1] = RetrievalModel.Query(key);
        return new RetrievalSample(tokens, answers, positions);
    }

    /// <summary>
    /// The generator's seed from every argument. Not <see cref="HashCode"/>, which is salted per
    /// process: a question must be the same in every run, so reports from two runs compare.
    /// </summary>
    static int StableHash(int length, double depth, int seed, int distractors, int values)
    {
        ulong h = 14695981039346656037;
        foreach (long part in new[] { length, BitConverter.DoubleToInt64Bits(depth), seed, distractors, values })
            h = (h ^ (ulong)part) * 1099511628211;
        return (int)(h ^ (h >> 32));
    }

    static int FreePosition(Random rnd, int haystack, HashSet<int> used)
    {
        int at;
        do at = 1 + rnd.Next(haystack); while (!used.Add(at));
        return at;
    }

    /// <summary>
    /// 100 when the answers are exactly the model's top |answers| tokens (every answer scores above
    /// every other token), else 0: a multi-value question is right only when all its values are.
    /// </summary>
    public static double Score(ReadOnlySpan<float> logits, params ReadOnlySpan<int> answers)
    {
        if (answers.IsEmpty) throw new ArgumentException("a question needs at least one answer");
        float lowest = float.PositiveInfinity;
        foreach (int a in answers) lowest = Math.Min(lowest, logits[a]);
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] >= lowest && !answers.Contains(i)) return 0;
        return 100;
    }
}
