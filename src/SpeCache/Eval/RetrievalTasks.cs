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

/// <summary>The RULER-style question kinds the constructed model answers.</summary>
public enum RetrievalTaskKind
{
    /// <summary>One needle in filler, asked for its value.</summary>
    Single,
    /// <summary>The needle among distractor pairs of other keys (RULER's multi-key NIAH).</summary>
    MultiKey,
    /// <summary>One key given several values in separate needles; every value must be returned (RULER's multi-value NIAH).</summary>
    MultiValue,
    /// <summary>
    /// A chain X0 = v, X1 = X0, ..., asked for the last variable (RULER's variable tracking), among
    /// distractor chains; needs a constructed model with at least as many link layers as hops.
    /// </summary>
    VariableTracking,
}

/// <summary>
/// What a retrieval run asks: the kind, distractor pairs of other keys (for variable tracking,
/// distractor chains), values per key (multi-value) and links per chain (variable tracking).
/// </summary>
public sealed record RetrievalTask(RetrievalTaskKind Kind, int Distractors = 0, int Values = 1, int Hops = 0)
{
    public string Name => Kind == RetrievalTaskKind.VariableTracking ? "vt" : Kind.ToString().ToLowerInvariant();

    /// <param name="chains">Variable tracking: distractor chains beside the asked one.</param>
    public static RetrievalTask Parse(string name, int distractors, int values, int hops = 2, int chains = 4) => name.Trim().ToLowerInvariant() switch
    {
        "single" => new(RetrievalTaskKind.Single),
        "multikey" => new(RetrievalTaskKind.MultiKey, distractors),
        "multivalue" => new(RetrievalTaskKind.MultiValue, distractors, values),
        "vt" or "variable-tracking" => new(RetrievalTaskKind.VariableTracking, chains, Hops: hops),
        _ => throw new ArgumentException($"unknown retrieval task '{name}' (available: single, multikey, multivalue, vt)"),
    };

    /// <summary>The question for one cell and seed; the same arguments always give the same sample.</summary>
    public RetrievalSample Make(int length, double depth, int seed) => Kind switch
    {
        RetrievalTaskKind.Single => RetrievalTasks.Needle(length, depth, seed),
        RetrievalTaskKind.MultiKey => RetrievalTasks.Needle(length, depth, seed, Distractors),
        RetrievalTaskKind.MultiValue => RetrievalTasks.MultiValue(length, depth, seed, Values, Distractors),
        RetrievalTaskKind.VariableTracking => RetrievalTasks.VariableTracking(length, depth, seed, Hops, Distractors),
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

    /// <summary>
    /// A variable-tracking question: the pair P(k0, v) at <paramref name="depth"/>, then the links
    /// L(k1, k0), ..., L(kn, kn-1) at random later places, <paramref name="chains"/> distractor chains
    /// of the same length with other keys and values, and the query Q(kn), whose answer is v.
    /// The needle positions are the asked chain's, pair first.
    /// </summary>
    public static RetrievalSample VariableTracking(int length, double depth, int seed, int hops, int chains)
    {
        if (depth is < 0 or > 1) throw new ArgumentException($"needle depth must be between 0 and 1 (got {depth})");
        if (hops is < 1 or > RetrievalModel.MaxHops) throw new ArgumentException($"a variable-tracking chain has 1 to {RetrievalModel.MaxHops} hops (got {hops})");
        int maxChains = Math.Min(RetrievalModel.LinkKeys / (hops + 1), RetrievalModel.Values) - 1;
        if (chains < 0 || chains > maxChains)
            throw new ArgumentException($"{chains} distractor chains of {hops} hops do not fit {RetrievalModel.LinkKeys} chain keys and {RetrievalModel.Values} values (at most {maxChains})");
        int perChain = hops + 1;
        if (length < 2 + perChain * (chains + 1))
            throw new ArgumentException($"a context of {length} tokens has no room for {chains + 1} chains of {perChain} tokens");
        var rnd = new Random(StableHash(length, depth, seed, chains, -hops) & int.MaxValue);
        var tokens = Haystack(rnd, length);
        int haystack = length - 2; // positions 1 .. length - 2
        var keys = Distinct(rnd, RetrievalModel.LinkKeys, perChain * (chains + 1));
        var values = Distinct(rnd, RetrievalModel.Values, chains + 1);
        var used = new HashSet<int>();
        int[] asked = new int[perChain];
        // The asked chain: its pair at the depth (leaving room for its links after it), links later.
        asked[0] = 1 + (int)Math.Round(depth * (haystack - perChain));
        used.Add(asked[0]);
        var later = Enumerable.Range(asked[0] + 1, haystack - asked[0]).OrderBy(_ => rnd.Next()).Take(hops).Order().ToArray();
        for (int i = 0; i < hops; i++) used.Add(asked[i + 1] = later[i]);
        for (int c = 1; c <= chains; c++)
        {
            var at = new int[perChain];
            for (int i = 0; i < perChain; i++) at[i] = FreePosition(rnd, haystack, used);
            Array.Sort(at);
            Place(tokens, at, keys.AsSpan(c * perChain, perChain), values[c]);
        }
        Place(tokens, asked, keys.AsSpan(0, perChain), values[0]);
        tokens[^1] = RetrievalModel.Query(keys[hops]);
        return new RetrievalSample(tokens, [RetrievalModel.Answer(values[0])], asked);
    }

    /// <summary>Writes one chain: the pair of its first key, then each key linked to the one before.</summary>
    static void Place(int[] tokens, int[] positions, ReadOnlySpan<int> keys, int value)
    {
        tokens[positions[0]] = RetrievalModel.Pair(keys[0], value);
        for (int i = 1; i < positions.Length; i++) tokens[positions[i]] = RetrievalModel.Link(keys[i], keys[i - 1]);
    }

    /// <summary>BOS, then random filler tokens up to the last place, which the query takes.</summary>
    static int[] Haystack(Random rnd, int length)
    {
        var tokens = new int[length];
        tokens[0] = RetrievalModel.Bos;
        for (int i = 1; i < length - 1; i++) tokens[i] = RetrievalModel.Filler(rnd.Next(RetrievalModel.Fillers));
        return tokens;
    }

    static int[] Distinct(Random rnd, int range, int count)
    {
        var picked = new HashSet<int>();
        var result = new int[count];
        for (int i = 0; i < count; i++)
        {
            int x;
            do x = rnd.Next(range); while (!picked.Add(x));
            result[i] = x;
        }
        return result;
    }

    static RetrievalSample Generate(int length, double depth, int seed, int values, int distractors, int hash)
    {
        if (depth is < 0 or > 1) throw new ArgumentException($"needle depth must be between 0 and 1 (got {depth})");
        if (length < 3 + values + distractors)
            throw new ArgumentException($"a context of {length} tokens has no room for {values} needles and {distractors} distractors");
        if (distractors < 0 || distractors > RetrievalModel.Keys - 1)
            throw new ArgumentException($"{distractors} distractors do not fit {RetrievalModel.Keys - 1} other keys");
        var rnd = new Random(hash & int.MaxValue);
        var tokens = Haystack(rnd, length);
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
