using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Eval;

/// <summary>One retrieval question: the context (BOS, haystack with needles, then the query token) and the right answer.</summary>
public sealed record RetrievalSample(int[] Tokens, int AnswerToken, int NeedlePosition);

/// <summary>
/// Needle-in-a-haystack and key-value retrieval questions for <see cref="RetrievalModel"/>, generated
/// from a seed: filler tokens, one needle P(k, v) at a chosen depth, optionally distractor pairs with
/// other keys, and the query Q(k) last. The same arguments always give the same sample.
/// </summary>
public static class RetrievalTasks
{
    /// <param name="length">Tokens in the whole context, BOS and query included.</param>
    /// <param name="depth">Where the needle sits, 0 (start) to 1 (just before the query).</param>
    /// <param name="distractors">Other key-value pairs spread over the haystack (multi-key retrieval).</param>
    public static RetrievalSample Needle(int length, double depth, int seed, int distractors = 0)
    {
        if (length < 4) throw new ArgumentException($"a retrieval context needs at least 4 tokens (got {length})");
        if (depth is < 0 or > 1) throw new ArgumentException($"needle depth must be between 0 and 1 (got {depth})");
        if (distractors < 0 || distractors > Math.Min(RetrievalModel.Keys - 1, length - 4))
            throw new ArgumentException($"{distractors} distractors do not fit {RetrievalModel.Keys - 1} other keys and a context of {length}");
        var rnd = new Random(HashCode.Combine(length, depth, seed, distractors) & int.MaxValue);
        var tokens = new int[length];
        tokens[0] = RetrievalModel.Bos;
        for (int i = 1; i < length - 1; i++) tokens[i] = RetrievalModel.Filler(rnd.Next(RetrievalModel.Fillers));
        int key = rnd.Next(RetrievalModel.Keys), value = rnd.Next(RetrievalModel.Values);
        int haystack = length - 2; // positions 1 .. length - 2
        int needleAt = 1 + (int)Math.Round(depth * (haystack - 1));
        tokens[needleAt] = RetrievalModel.Pair(key, value);
        var usedKeys = new HashSet<int> { key };
        var usedPositions = new HashSet<int> { needleAt };
        for (int d = 0; d < distractors; d++)
        {
            int other;
            do other = rnd.Next(RetrievalModel.Keys); while (!usedKeys.Add(other));
            int at;
            do at = 1 + rnd.Next(haystack); while (!usedPositions.Add(at));
            tokens[at] = RetrievalModel.Pair(other, rnd.Next(RetrievalModel.Values));
        }
        tokens[^1] = RetrievalModel.Query(key);
        return new RetrievalSample(tokens, RetrievalModel.Answer(value), needleAt);
    }

    /// <summary>100 when the model's top token is the answer, else 0.</summary>
    public static double Score(ReadOnlySpan<float> logits, int answerToken)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best == answerToken ? 100 : 0;
    }
}

/// <summary>Accuracy of one policy on one (length, depth) cell.</summary>
public sealed record RetrievalCell(int Length, double Depth, int Samples, double Accuracy);

public sealed record RetrievalPolicyResult(string Label, string Spec, long FastTierBytes, long HostTierBytes, double Accuracy, IReadOnlyList<RetrievalCell> Cells);

public sealed record RetrievalReport(string Model, int Distractors, int[] Lengths, double[] Depths, int SamplesPerCell, IReadOnlyList<RetrievalPolicyResult> Policies);

/// <summary>
/// Runs retrieval questions through each policy the way a user's request would run: the context is
/// the prompt (prefilled), and the query token is decoded as a decode step, through
/// <see cref="DecodeStepper"/>, so the policy's decode-time attention (low-bit copy, top-k,
/// speculative prefetch, eviction) is what answers it.
/// </summary>
public static class RetrievalEval
{
    public static RetrievalReport Run(LlamaModel model, string modelName, IReadOnlyList<string> policySpecs, int[] lengths, double[] depths,
        int samplesPerCell, int distractors, Action<string, int, int>? progress = null)
    {
        int longest = lengths.Max();
        if (longest > model.Config.ContextLength)
            throw new ArgumentException($"length {longest} exceeds the model's context of {model.Config.ContextLength}");
        var specs = policySpecs.Select(s => (Spec: s, Options: PolicySpec.Parse(s))).ToList();
        var results = new List<RetrievalPolicyResult>();
        var state = model.CreateState(64);
        foreach (var (spec, options) in specs)
        {
            string label = PolicySpec.Label(options);
            using var cache = KvCacheFactory.Create(options, model.Config, longest);
            var cells = new List<RetrievalCell>();
            int done = 0, total = lengths.Length * depths.Length * samplesPerCell;
            foreach (int length in lengths)
            {
                foreach (double depth in depths)
                {
                    double sum = 0;
                    for (int s = 0; s < samplesPerCell; s++)
                    {
                        var sample = RetrievalTasks.Needle(length, depth, seed: s, distractors);
                        cache.Clear();
                        model.Forward(sample.Tokens.AsSpan(0, sample.Tokens.Length - 1), cache, state);
                        var stepper = new DecodeStepper(model, cache, state);
                        sum += RetrievalTasks.Score(stepper.Step(sample.Tokens[^1]), sample.AnswerToken);
                        progress?.Invoke(label, done++, total);
                    }
                    cells.Add(new RetrievalCell(length, depth, samplesPerCell, sum / samplesPerCell));
                }
            }
            results.Add(new RetrievalPolicyResult(label, spec, cache.Memory.FastTierBytes, cache.Memory.HostTierBytes, cells.Average(c => c.Accuracy), cells));
        }
        return new RetrievalReport(modelName, distractors, lengths, depths, samplesPerCell, results);
    }
}
