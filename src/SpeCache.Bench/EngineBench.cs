using System.Diagnostics;
using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.Transformer;

namespace SpeCache.Bench;

/// <summary>Our engine: for each KV policy and depth, prefill and decode speed.</summary>
public static class EngineBench
{
    public const string Name = "SpeCache";

    /// <summary>Weight bytes one decode step reads: every matrix once (the tied head reads the embedding as its output).</summary>
    public static long WeightBytesPerToken(ModelFile file)
    {
        long total = 0;
        foreach (var tensor in file.Tensors.Values) total += tensor.ByteLength;
        // An untied embedding is only looked up, one row per token.
        if (!file.Config.TiedEmbeddings) total -= file.Tensors["token_embd.weight"].ByteLength;
        return total;
    }

    /// <summary>Mean context length while the decode tokens are made: what the KV estimate multiplies.</summary>
    public static long MeanDecodeContext(BenchSettings s, int depth) => depth + s.PromptTokens + s.DecodeTokens / 2;

    public static List<BenchRow> Run(BenchSettings settings, MemoryBandwidth bandwidth, Action<string> status, Action<BenchRow> measured)
    {
        var engine = Engine.Load(settings.ModelPath, new EngineOptions { Threads = settings.Threads, ContextLength = settings.ContextLength, MapWeights = settings.MapWeights });
        using var _ = engine;
        var model = engine.Model;
        long weightBytes = WeightBytesPerToken(engine.File);
        var rows = new List<BenchRow>();
        foreach (var policy in settings.Policies)
        {
            var options = PolicySpec.Parse(policy);
            long kvPerToken = KvCacheFactory.FastTierBytesPerToken(options, model.Config);
            using var cache = KvCacheFactory.Create(options, model.Config, settings.ContextLength, model.Backend.Threads);
            var state = model.CreateState();
            // Warm-up outside the clock: the first calls compile the policy's and the kernels' code
            // (about 0.3 s for a low-bit cache's decode path). The context must be long enough for
            // the decode steps to take the paths a deep context takes: low-bit groups quantized and
            // the heads split over threads. A 16-token warm-up reached neither, and the first timed
            // step at 32K then paid for compiling them.
            status($"{Name} {policy}: warm-up");
            int warmUp = Math.Min(WarmUpTokens, settings.ContextLength - 3);
            Measure(model, cache, state, new TokenSource(-1, model.Config.VocabSize).Next(warmUp), 2);
            cache.Clear();
            var tokens = new TokenSource(settings.Seed, model.Config.VocabSize);
            foreach (var depth in settings.Depths.Order())
            {
                // The context is reached by prefilling random tokens; a shallower depth than what the cache
                // already holds starts over.
                if (cache.Length > depth) cache.Clear();
                status($"{Name} {policy}: filling the context to {depth:N0} tokens");
                Fill(model, cache, state, tokens, depth - cache.Length);

                status($"{Name} {policy} at depth {depth:N0}: prefill {settings.PromptTokens} tokens, decode {settings.DecodeTokens}");
                var prompt = tokens.Next(settings.PromptTokens);
                var ((prefill, decode), bandwidthThen) = bandwidth.Around(() => Measure(model, cache, state, prompt, settings.DecodeTokens));
                double prefillRate = settings.PromptTokens / prefill.TotalSeconds;
                double decodeRate = settings.DecodeTokens / decode.TotalSeconds;
                long kvBytes = kvPerToken * MeanDecodeContext(settings, depth);
                var row = new BenchRow(Name, policy, depth, settings.PromptTokens, prefillRate, settings.DecodeTokens, decodeRate,
                    weightBytes, kvBytes, bandwidthThen);
                rows.Add(row);
                measured(row);
            }
        }
        return rows;
    }

    /// <summary>Prompt tokens of the warm-up: past every policy's threshold for splitting heads over threads (512 positions of 8 KV heads) and several 64-token low-bit groups.</summary>
    const int WarmUpTokens = 640;

    static void Fill(LlamaModel model, IKvCache cache, ForwardState state, TokenSource tokens, int count)
    {
        const int chunk = 512;
        for (int done = 0; done < count; done += chunk)
            model.Forward(tokens.Next(Math.Min(chunk, count - done)), cache, state);
    }

    /// <summary>
    /// Prefills <paramref name="prompt"/>, then decodes <paramref name="steps"/> greedy tokens, each fed back.
    /// A policy that decodes speculative rows (specache) gets them: each step then also runs the guess of
    /// the next token, the argmax of the previous step's speculative row, as the paper's decode loop does.
    /// </summary>
    static (TimeSpan Prefill, TimeSpan Decode) Measure(LlamaModel model, IKvCache cache, ForwardState state, int[] prompt, int steps)
    {
        int speculative = cache.SpeculativeRows, vocab = model.Config.VocabSize;
        var clock = Stopwatch.StartNew();
        var logits = model.Forward(prompt, cache, state);
        var prefill = clock.Elapsed;
        int token = ArgMax(logits), guess = token;
        var step = new int[1 + speculative];

        clock.Restart();
        for (int i = 0; i < steps; i++)
        {
            step[0] = token;
            for (int s = 1; s < step.Length; s++) step[s] = guess;
            var output = model.Forward(step, cache, state, allLogits: speculative > 0, speculativeRows: speculative);
            token = ArgMax(output[..vocab]);
            if (speculative > 0) guess = ArgMax(output[^vocab..]);
        }
        return (prefill, clock.Elapsed);
    }

    static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }
}

/// <summary>Random token ids, the same for every engine and policy of a run (same seed).</summary>
public sealed class TokenSource(int seed, int vocab)
{
    readonly Random _random = new(seed);

    // Ids from 3 up skip the SPM specials (<unk>, <s>, </s>), which some engines treat specially.
    public int[] Next(int count)
    {
        var ids = new int[count];
        for (int i = 0; i < count; i++) ids[i] = _random.Next(Math.Min(3, vocab - 1), vocab);
        return ids;
    }
}
