using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Eval;

/// <summary>Accuracy of one policy on one (length, depth) cell.</summary>
public sealed record RetrievalCell(int Length, double Depth, int Samples, double Accuracy);

public sealed record RetrievalPolicyResult(string Label, string Spec, long FastTierBytes, long HostTierBytes, double Accuracy, IReadOnlyList<RetrievalCell> Cells);

public sealed record RetrievalReport(string Model, string Task, int Distractors, int Values, int[] Lengths, double[] Depths, int SamplesPerCell,
    IReadOnlyList<RetrievalPolicyResult> Policies, int Hops = 0);

/// <summary>
/// Runs retrieval questions through each policy the way a user's request would run: the context is
/// the prompt (prefilled), and the query token is decoded as a decode step, through
/// <see cref="DecodeStepper"/>, so the policy's decode-time attention (low-bit copy, top-k,
/// speculative prefetch, eviction) is what answers it.
/// </summary>
public static class RetrievalEval
{
    public static RetrievalReport Run(LlamaModel model, string modelName, IReadOnlyList<string> policySpecs, int[] lengths, double[] depths,
        int samplesPerCell, RetrievalTask task, Action<string, int, int>? progress = null)
    {
        // The questions are token ids of the constructed model's vocabulary (pairs, queries,
        // answers); another vocabulary would read them as unrelated tokens and score noise.
        if (model.Config.VocabSize != RetrievalModel.VocabSize && model.Config.VocabSize != RetrievalModel.VocabSizeWithLinks)
            throw new ArgumentException($"retrieval questions are written in the constructed retrieval model's vocabulary of {RetrievalModel.VocabSize} tokens; this model has {model.Config.VocabSize}");
        if (task.Kind == RetrievalTaskKind.VariableTracking && RetrievalModel.LinkLayers(model.Config) < task.Hops)
            throw new ArgumentException($"variable tracking with {task.Hops} hops needs a constructed model with {task.Hops} link layers (one attention read per hop); this one has {RetrievalModel.LinkLayers(model.Config)}");
        int longest = lengths.Max();
        if (longest > model.Config.ContextLength)
            throw new ArgumentException($"length {longest} exceeds the model's context of {model.Config.ContextLength}");
        var specs = policySpecs.Select(s => (Spec: s, Options: PolicySpec.Parse(s))).ToList();
        var results = new List<RetrievalPolicyResult>();
        var state = model.CreateState(64);
        foreach (var (spec, options) in specs)
        {
            string label = PolicySpec.Label(options);
            using var cache = KvCacheFactory.Create(options, model.Config, longest, model.Backend.Threads);
            var cells = new List<RetrievalCell>();
            int done = 0, total = lengths.Length * depths.Length * samplesPerCell;
            foreach (int length in lengths)
            {
                foreach (double depth in depths)
                {
                    double sum = 0;
                    for (int s = 0; s < samplesPerCell; s++)
                    {
                        var sample = task.Make(length, depth, seed: s);
                        cache.Clear();
                        model.Forward(sample.Tokens.AsSpan(0, sample.Tokens.Length - 1), cache, state);
                        var stepper = new DecodeStepper(model, cache, state);
                        sum += RetrievalTasks.Score(stepper.Step(sample.Tokens[^1]), sample.Answers);
                        progress?.Invoke($"{task.Name}: {label}", done++, total);
                    }
                    cells.Add(new RetrievalCell(length, depth, samplesPerCell, sum / samplesPerCell));
                }
            }
            results.Add(new RetrievalPolicyResult(label, spec, cache.Memory.FastTierBytes, cache.Memory.HostTierBytes, cells.Average(c => c.Accuracy), cells));
        }
        return new RetrievalReport(modelName, task.Name, task.Distractors, task.Values, lengths, depths, samplesPerCell, results, task.Hops);
    }
}

/// <summary>A retrieval run over several tasks on one model: one report per task.</summary>
public sealed record RetrievalSuite(string Model, IReadOnlyList<RetrievalReport> Tasks);
