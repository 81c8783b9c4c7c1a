using System.CommandLine;
using System.CommandLine.Parsing;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.KvCache.Policies.H2o;
using SpeCache.KvCache.Policies.Kivi;
using SpeCache.KvCache.Policies.SpeCache;
using SpeCache.KvCache.Tiers;
using SpeCache.KvCache.Policies.Streaming;

namespace SpeCache.Cli;

/// <summary>Options every model-running command shares.</summary>
sealed class CommonOptions
{
    public Option<string?> Model { get; } = new("--model", "-m") { Description = "Model: a .gguf file, a Hugging Face folder (config.json + safetensors), or a llama2.c .bin. Default: the embedded stories260K." };
    public Option<string?> Tokenizer { get; } = new("--tokenizer") { Description = "Tokenizer file for llama2.c checkpoints (default: tokenizer.bin or tok*.bin beside the model)." };
    public Option<int> Threads { get; } = new("--threads", "-t") { Description = "Compute threads (default: all cores).", DefaultValueFactory = _ => 0 };
    public Option<bool> Mmap { get; } = new("--mmap") { Description = "Read weights straight from the model file's memory map instead of a copy in process memory (opens at once, shares pages between processes; decodes slower)." };
    public Option<int> Context { get; } = new("--ctx", "-c") { Description = "Context length (default: the model's).", DefaultValueFactory = _ => 0 };
    public Option<string> Kv { get; } = new("--kv") { Description = $"KV cache policy: {string.Join(", ", KvCacheFactory.Policies)}.", DefaultValueFactory = _ => "full" };
    public Option<int> KvBits { get; } = new("--kv-bits") { Description = "kivi: bits per key/value code (1, 2 or 4).", DefaultValueFactory = _ => 2 };
    public Option<int> KvGroup { get; } = new("--kv-group") { Description = "kivi: quantization group size (32 or 64).", DefaultValueFactory = _ => 32 };
    public Option<int> KvResidual { get; } = new("--kv-residual") { Description = "kivi, specache: newest tokens kept in full precision (a multiple of the group).", DefaultValueFactory = _ => 64 };
    public Option<int> KvTopK { get; } = new("--kv-topk") { Description = "specache: 16-bit pairs attended per layer and KV head each step.", DefaultValueFactory = _ => 64 };
    public Option<string> KvSpeculation { get; } = new("--kv-speculation") { Description = "specache: decode a speculative row to prefetch the next step's pairs: on, off (fetch on demand), or auto (on when the host tier is slow: disk or a modelled link).", DefaultValueFactory = _ => "auto" };
    public Option<string> KvMiss { get; } = new("--kv-miss") { Description = "specache: a top-k pair not prefetched is fetched now (fetch) or read low-bit (lowbit).", DefaultValueFactory = _ => "fetch" };
    public Option<bool> KvRecall { get; } = new("--kv-recall") { Description = "specache: also measure top-k recall against exact attention (slow)." };
    public Option<long?> KvBudget { get; } = new("--kv-budget") { Description = "Most fast-tier KV bytes per sequence, e.g. 64MiB or 512KB: a cache that cannot fit fails before work starts; streaming/h2o size their window to it.", CustomParser = ParseBytes };
    public Option<string> KvType { get; } = new("--kv-type") { Description = "full: cache element type (f16, bf16, q8_0, q4_0, f32).", DefaultValueFactory = _ => "f16" };
    public Option<int> KvSinks { get; } = new("--kv-sinks") { Description = "streaming: first tokens always kept.", DefaultValueFactory = _ => 4 };
    public Option<int?> KvWindow { get; } = new("--kv-window") { Description = "streaming/h2o: recent tokens kept (default 252 / 128)." };
    public Option<int?> KvHeavy { get; } = new("--kv-heavy") { Description = "h2o: heavy-hitter tokens kept besides the window (default: the window)." };
    public Option<string> HostTier { get; } = new("--host-tier") { Description = "specache: where the 16-bit cache lives: ram, or disk:<folder or file> (memory-mapped).", DefaultValueFactory = _ => "ram" };
    public Option<string?> HostBandwidth { get; } = new("--host-bandwidth") { Description = "specache: model the host link's bandwidth, e.g. 25GB/s (PCIe 4.0 x16)." };
    public Option<string?> HostLatency { get; } = new("--host-latency") { Description = "specache: model the host link's latency per transfer, e.g. 10us." };

    /// <summary>A bad byte size (--kv-budget, --batch-budget) is a parse error: one line, exit code 2.</summary>
    public static long? ParseBytes(ArgumentResult result)
    {
        if (result.Tokens.Count == 0) return null;
        try { return ByteSize.Parse(result.Tokens[0].Value); }
        catch (FormatException e)
        {
            result.AddError($"{(result.Parent as OptionResult)?.Option.Name ?? "size"}: {e.Message}");
            return null;
        }
    }

    public void AddTo(Command command)
    {
        command.Options.Add(Model);
        command.Options.Add(Tokenizer);
        command.Options.Add(Threads);
        command.Options.Add(Mmap);
        command.Options.Add(Context);
        command.Options.Add(Kv);
        command.Options.Add(KvBits);
        command.Options.Add(KvGroup);
        command.Options.Add(KvResidual);
        command.Options.Add(KvTopK);
        command.Options.Add(KvSpeculation);
        command.Options.Add(KvMiss);
        command.Options.Add(KvRecall);
        command.Options.Add(KvType);
        command.Options.Add(KvBudget);
        command.Options.Add(KvSinks);
        command.Options.Add(KvWindow);
        command.Options.Add(KvHeavy);
        command.Options.Add(HostTier);
        command.Options.Add(HostBandwidth);
        command.Options.Add(HostLatency);
        KvMiss.AcceptOnlyFromAmong("fetch", "lowbit");
        KvSpeculation.AcceptOnlyFromAmong("auto", "on", "off");
        Kv.AcceptOnlyFromAmong([.. KvCacheFactory.Policies]);
        KvType.AcceptOnlyFromAmong([.. Enum.GetValues<FullKvElement>().Select(FullKvCache.Name)]);
    }

    public string ModelPath(ParseResult result) => result.GetValue(Model) ?? DefaultModel.Path();

    /// <summary>The KV cache policy and its settings as the options say, validated (one-line errors).</summary>
    public KvCacheOptions ReadKvCache(ParseResult result)
    {
        string policy = result.GetValue(Kv)!;
        int bits = result.GetValue(KvBits), group = result.GetValue(KvGroup), residual = result.GetValue(KvResidual);
        var kivi = new KiviOptions(bits, group, residual);
        var link = Interconnect.Unlimited;
        if (result.GetValue(HostBandwidth) is string bandwidth)
            link = link with { BytesPerSecond = Interconnect.ParseBandwidth(bandwidth) };
        if (result.GetValue(HostLatency) is string latency)
            link = link with { Latency = Interconnect.ParseLatency(latency) };
        string hostTier = result.GetValue(HostTier)!;
        bool? speculate = result.GetValue(KvSpeculation) switch
        {
            "on" => true,
            "off" => false,
            _ => null, // auto: see SpeCacheOptions.Speculative
        };
        var speCache = new SpeCacheOptions(bits, group, residual, result.GetValue(KvTopK), speculate,
            result.GetValue(KvMiss) == "lowbit" ? MissPolicy.LowBit : MissPolicy.Fetch, hostTier, result.GetValue(KvRecall))
        { Interconnect = link };
        var streaming = new StreamingOptions { Sinks = result.GetValue(KvSinks) };
        if (result.GetValue(KvWindow) is int streamingWindow) streaming = streaming with { Window = streamingWindow };
        var h2o = new H2oOptions();
        if (result.GetValue(KvWindow) is int window) h2o = h2o with { Window = window, HeavyHitters = window };
        if (result.GetValue(KvHeavy) is int heavy) h2o = h2o with { HeavyHitters = heavy };
        var element = FullKvCache.Parse(result.GetValue(KvType)!);
        if (element != FullKvElement.F16 && policy != "full")
            throw new ArgumentException($"--kv-type {FullKvCache.Name(element)} applies to --kv full only");
        switch (policy)
        {
            case "kivi": kivi.Validate(); break;
            case "specache": speCache.Validate(); break;
            case "streaming": streaming.Validate(); break;
            case "h2o": h2o.Validate(); break;
        }
        return new KvCacheOptions
        {
            Policy = policy,
            Kivi = kivi,
            SpeCache = speCache,
            Streaming = streaming,
            H2o = h2o,
            FullElement = element,
            FastTierBudgetBytes = result.GetValue(KvBudget),
        };
    }

    /// <param name="defaultModel">The model when --model is not given (else the embedded stories260K).</param>
    public Engine LoadEngine(ParseResult result, string? defaultModel = null)
    {
        string path = result.GetValue(Model) ?? defaultModel ?? DefaultModel.Path();
        var options = new EngineOptions
        {
            Threads = result.GetValue(Threads),
            ContextLength = result.GetValue(Context),
            TokenizerPath = result.GetValue(Tokenizer),
            KvCache = ReadKvCache(result),
            MapWeights = result.GetValue(Mmap),
        };
        return Progress.Run($"Loading {Path.GetFileName(path.TrimEnd('/'))}", () => Engine.Load(path, options));
    }
}
