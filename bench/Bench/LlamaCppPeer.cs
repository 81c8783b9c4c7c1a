using SpeCache.Bench;
using SpeCache.LlamaCpp;
using SpeCache.ModelFiles;

/// <summary>llama.cpp (libllama from the peer, in this process) measured exactly as <see cref="EngineBench"/> measures us.</summary>
sealed class LlamaCppPeer : IBenchPeer
{
    static readonly (string Name, LlamaCacheType Type, double BytesPerElement)[] CacheTypes =
    [
        ("f16", LlamaCacheType.F16, 2),
        ("q8_0", LlamaCacheType.Q8_0, 34.0 / 32), // ggml blocks: 32 values in 34 bytes
        ("q4_0", LlamaCacheType.Q4_0, 18.0 / 32), // and in 18 bytes
    ];

    public string Name => "llama.cpp";
    public string? BaselineKv => "f16";

    public void CheckCacheTypes(IReadOnlyList<string>? cacheTypes)
    {
        foreach (string type in cacheTypes ?? [])
            if (!CacheTypes.Any(c => c.Name == type))
                throw new ArgumentException($"--peer-kv: llama.cpp has no cache type '{type}' here (available: {string.Join(", ", CacheTypes.Select(c => c.Name))})");
    }

    public List<BenchRow> Run(BenchSettings settings, MemoryBandwidth bandwidth, Action<string> status, Action<BenchRow> measured)
    {
        long weightBytes, kvElementsPerToken;
        int vocab;
        using (var file = ModelLoader.Open(settings.ModelPath))
        {
            weightBytes = EngineBench.WeightBytesPerToken(file);
            kvElementsPerToken = 2L * file.Config.LayerCount * file.Config.KvDim;
            vocab = file.Config.VocabSize;
        }
        var rows = new List<BenchRow>();
        foreach (var (name, type, bytesPerElement) in CacheTypes.Where(c => settings.PeerCacheTypes?.Contains(c.Name) ?? true))
        {
            status($"{Name} {name}: loading");
            // Flash attention left to llama.cpp (Auto): its default, and what a quantized V cache needs.
            using var model = LlamaCppModel.Load(settings.ModelPath, settings.Threads, settings.ContextLength, type,
                loadMode: settings.PeerReadsWeights ? LlamaLoadMode.Read : LlamaLoadMode.Auto, chunkedFill: settings.PeerFillChunk > 0);
            // Warm-up outside the clock, as for our engine: llama.cpp sizes its compute graphs on first use.
            model.DecodeAfter(new TokenSource(-1, vocab).Next(Math.Min(settings.PromptTokens, 16)), 2);
            model.ClearCache();
            var tokens = new TokenSource(settings.Seed, vocab);
            foreach (var depth in settings.Depths.Order())
            {
                if (model.Position > depth) model.ClearCache();
                if (depth > model.Position)
                {
                    var fill = tokens.Next(depth - model.Position);
                    if (settings.PeerFillChunk > 0)
                    {
                        status($"{Name} {name}: filling the context to {depth:N0} tokens in chunks of {settings.PeerFillChunk}");
                        model.AppendInChunks(fill, settings.PeerFillChunk);
                    }
                    else
                    {
                        status($"{Name} {name}: filling the context to {depth:N0} tokens");
                        model.Append(fill);
                    }
                }

                status($"{Name} {name} at depth {depth:N0}: prefill {settings.PromptTokens} tokens, decode {settings.DecodeTokens}");
                var prompt = tokens.Next(settings.PromptTokens);
                var (timing, bandwidthThen) = bandwidth.Around(() => model.DecodeAfter(prompt, settings.DecodeTokens));
                long kvBytes = (long)(kvElementsPerToken * bytesPerElement) * EngineBench.MeanDecodeContext(settings, depth);
                var row = new BenchRow(Name, name, depth, settings.PromptTokens, timing.PrefillTokensPerSecond, settings.DecodeTokens,
                    timing.DecodeTokensPerSecond, weightBytes, kvBytes, bandwidthThen);
                rows.Add(row);
                measured(row);
            }
        }
        return rows;
    }
}
