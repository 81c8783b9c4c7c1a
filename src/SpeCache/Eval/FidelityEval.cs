using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Eval;

/// <summary>How one policy's next-token distributions compare with the full cache's over the same text.</summary>
public sealed record PolicyFidelity(
    string Label,
    string Spec,
    long FastTierBytes,
    long HostTierBytes,
    double MeanKl,
    double MaxKl,
    double Top1Agreement,
    double Perplexity,
    double? TopKRecall,
    double? PrefetchHitRate,
    double? SpeculativeAccuracy,
    double[] KlPerStep,
    double[] AttentionErrorPerLayer,
    double[] MaxAttentionErrorPerLayer);

/// <summary>A fidelity run: the text, the reference (full cache) perplexity, and one row per policy.</summary>
public sealed record FidelityReport(
    string Model,
    int PrefillTokens,
    int DecodeSteps,
    double ReferencePerplexity,
    IReadOnlyList<PolicyFidelity> Policies);

/// <summary>
/// Fidelity against full precision: the text is fed teacher-forced (prefill of a prefix, then one
/// token per decode step, through the same <see cref="DecodeStepper"/> generation uses, speculative
/// row included), and every step's next-token distribution is compared with the full cache's:
/// KL(full ‖ policy), whether the argmax agrees, and the perplexity of the text itself. A second
/// pass per policy runs it behind an <see cref="AttentionErrorProbe"/>, which feeds the forward pass
/// the full cache's attention outputs and measures the policy's relative error per layer on them.
/// </summary>
public static class FidelityEval
{
    public static FidelityReport Run(LlamaModel model, string modelName, int[] tokens, int prefill, int steps, int contextLength,
        IReadOnlyList<string> policySpecs, Action<string, int, int>? progress = null)
    {
        if (prefill < 1) throw new ArgumentException("the prefill needs at least one token");
        if (steps < 1) throw new ArgumentException("at least one decode step is needed");
        if (prefill + steps > tokens.Length)
            throw new ArgumentException($"the text has {tokens.Length} tokens, fewer than {prefill} prefill + {steps} steps");
        if (prefill + steps > contextLength)
            throw new ArgumentException($"{prefill} prefill + {steps} steps exceed the context of {contextLength}");
        var specs = policySpecs.Select(s => (Spec: s, Options: PolicySpec.Parse(s))).ToList();

        float[][] reference;
        using (var full = KvCacheFactory.Create(Reference, model.Config, contextLength, model.Backend.Threads))
            reference = Decode(model, full, tokens, prefill, steps, (i, n) => progress?.Invoke("full (reference)", i, n));
        var referenceLogProbs = reference.Select(LogSoftmax).ToArray();
        double referencePerplexity = Perplexity(referenceLogProbs, tokens, prefill);

        var rows = new List<PolicyFidelity>();
        foreach (var (spec, options) in specs)
        {
            string label = PolicySpec.Label(options);
            var (meanError, maxError) = AttentionErrors(model, options, tokens, prefill, steps, contextLength, (i, n) => progress?.Invoke(label + " (attention error)", i, n));
            using var cache = KvCacheFactory.Create(options, model.Config, contextLength, model.Backend.Threads);
            var logits = Decode(model, cache, tokens, prefill, steps, (i, n) => progress?.Invoke(label, i, n));
            var kl = new double[steps];
            int agree = 0;
            var logProbs = new double[steps][];
            for (int s = 0; s < steps; s++)
            {
                logProbs[s] = LogSoftmax(logits[s]);
                kl[s] = Kl(referenceLogProbs[s], logProbs[s]);
                if (ArgMax(reference[s]) == ArgMax(logits[s])) agree++;
            }
            var c = cache.Counters;
            rows.Add(new PolicyFidelity(label, spec, cache.Memory.FastTierBytes, cache.Memory.HostTierBytes,
                kl.Average(), kl.Max(), (double)agree / steps, Perplexity(logProbs, tokens, prefill),
                Finite(c?.TopKRecall), Finite(c?.PrefetchHitRate), Finite(c?.SpeculativeAccuracy), kl, meanError, maxError));
        }
        return new FidelityReport(modelName, prefill, steps, referencePerplexity, rows);
    }

    static double? Finite(double? value) => value is double v && double.IsFinite(v) ? v : null;

    static readonly KvCacheOptions Reference = new() { Policy = "full" };

    /// <summary>The policy's attention-output error per layer (mean and max over decode steps), on the full cache's hidden states.</summary>
    static (double[] Mean, double[] Max) AttentionErrors(LlamaModel model, KvCacheOptions options, int[] tokens, int prefill, int steps, int contextLength,
        Action<int, int> progress)
    {
        using var probe = new AttentionErrorProbe(KvCacheFactory.Create(Reference, model.Config, contextLength, model.Backend.Threads),
            KvCacheFactory.Create(options, model.Config, contextLength, model.Backend.Threads), model.Config);
        Decode(model, probe, tokens, prefill, steps, progress, () => probe.Measuring = true);
        return (probe.MeanErrorPerLayer(), probe.MaxErrorPerLayer());
    }

    /// <summary>Logits of the <paramref name="steps"/> positions after the prefill, each predicting the next token of the text.</summary>
    /// <param name="decodeStarts">Called between the prefill and the first decode step.</param>
    static float[][] Decode(LlamaModel model, IKvCache cache, int[] tokens, int prefill, int steps, Action<int, int> progress, Action? decodeStarts = null)
    {
        var state = model.CreateState(Math.Clamp(prefill, 2, 64));
        var logits = new float[steps][];
        logits[0] = model.Forward(tokens.AsSpan(0, prefill), cache, state).ToArray();
        decodeStarts?.Invoke();
        var stepper = new DecodeStepper(model, cache, state);
        for (int s = 1; s < steps; s++)
        {
            int token = tokens[prefill + s - 1];
            stepper.Observe(token);
            logits[s] = stepper.Step(token).ToArray();
            progress(s, steps);
        }
        return logits;
    }

    static double[] LogSoftmax(float[] logits)
    {
        double max = double.NegativeInfinity;
        foreach (float x in logits) max = Math.Max(max, x);
        double sum = 0;
        foreach (float x in logits) sum += Math.Exp(x - max);
        double log = max + Math.Log(sum);
        var result = new double[logits.Length];
        for (int i = 0; i < logits.Length; i++) result[i] = logits[i] - log;
        return result;
    }

    /// <summary>KL(p ‖ q) from log-probabilities.</summary>
    public static double Kl(double[] logP, double[] logQ)
    {
        double kl = 0;
        for (int i = 0; i < logP.Length; i++)
            if (logP[i] > -700) kl += Math.Exp(logP[i]) * (logP[i] - logQ[i]);
        return Math.Max(kl, 0);
    }

    static double Perplexity(double[][] logProbs, int[] tokens, int prefill)
    {
        double nll = 0;
        for (int s = 0; s < logProbs.Length; s++) nll -= logProbs[s][tokens[prefill + s]];
        return Math.Exp(nll / logProbs.Length);
    }

    static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
