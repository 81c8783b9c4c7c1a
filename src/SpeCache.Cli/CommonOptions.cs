using System.CommandLine;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.KvCache.Policies.H2o;
using SpeCache.KvCache.Policies.Kivi;
using SpeCache.KvCache.Policies.Streaming;

namespace SpeCache.Cli;

/// <summary>Options every model-running command shares.</summary>
sealed class CommonOptions
{
    public Option<string?> Model { get; } = new("--model", "-m") { Description = "Model: a .gguf file, a Hugging Face folder (config.json + safetensors), or a llama2.c .bin. Default: the embedded stories260K." };
    public Option<string?> Tokenizer { get; } = new("--tokenizer") { Description = "Tokenizer file for llama2.c checkpoints (default: tokenizer.bin or tok*.bin beside the model)." };
    public Option<int> Threads { get; } = new("--threads", "-t") { Description = "Compute threads (default: all cores).", DefaultValueFactory = _ => 0 };
    public Option<int> Context { get; } = new("--ctx", "-c") { Description = "Context length (default: the model's).", DefaultValueFactory = _ => 0 };
    public Option<string> Kv { get; } = new("--kv") { Description = $"KV cache policy: {string.Join(", ", KvCacheFactory.Policies)}.", DefaultValueFactory = _ => "full" };
    public Option<int> KvBits { get; } = new("--kv-bits") { Description = "kivi: bits per key/value code (1, 2 or 4).", DefaultValueFactory = _ => 2 };
    public Option<int> KvGroup { get; } = new("--kv-group") { Description = "kivi: quantization group size (32 or 64).", DefaultValueFactory = _ => 32 };
    public Option<int> KvResidual { get; } = new("--kv-residual") { Description = "kivi: newest tokens kept in full precision (a multiple of the group).", DefaultValueFactory = _ => 64 };
    public Option<string> KvType { get; } = new("--kv-type") { Description = "full: cache element type (f16, bf16, q8_0, q4_0, f32).", DefaultValueFactory = _ => "f16" };
    public Option<long?> KvBudget { get; } = new("--kv-budget") { Description = "Fast-tier KV bytes, e.g. 64MiB or 512KB: streaming/h2o size to it, other policies must fit.", CustomParser = ByteSize.ParseArgument };
    public Option<int> KvSinks { get; } = new("--kv-sinks") { Description = "streaming: first tokens always kept.", DefaultValueFactory = _ => 4 };
    public Option<int?> KvWindow { get; } = new("--kv-window") { Description = "streaming/h2o: recent tokens kept (default 252 / 128)." };
    public Option<int?> KvHeavy { get; } = new("--kv-heavy") { Description = "h2o: heavy-hitter tokens kept besides the window (default: the window)." };

    public void AddTo(Command command)
    {
        command.Options.Add(Model);
        command.Options.Add(Tokenizer);
        command.Options.Add(Threads);
        command.Options.Add(Context);
        command.Options.Add(Kv);
        command.Options.Add(KvBits);
        command.Options.Add(KvGroup);
        command.Options.Add(KvResidual);
        command.Options.Add(KvType);
        command.Options.Add(KvBudget);
        command.Options.Add(KvSinks);
        command.Options.Add(KvWindow);
        command.Options.Add(KvHeavy);
        Kv.AcceptOnlyFromAmong([.. KvCacheFactory.Policies]);
        KvType.AcceptOnlyFromAmong([.. Enum.GetValues<FullKvElement>().Select(FullKvCache.Name)]);
    }

    public string ModelPath(ParseResult result) => result.GetValue(Model) ?? DefaultModel.Path();

    public Engine LoadEngine(ParseResult result)
    {
        string path = ModelPath(result);
        if (result.GetValue(Kv) == "kivi")
            new KiviOptions(result.GetValue(KvBits), result.GetValue(KvGroup), result.GetValue(KvResidual)).Validate();
        var streaming = new StreamingOptions { Sinks = result.GetValue(KvSinks) };
        if (result.GetValue(KvWindow) is int streamingWindow) streaming = streaming with { Window = streamingWindow };
        var h2o = new H2oOptions();
        if (result.GetValue(KvWindow) is int window) h2o = h2o with { Window = window, HeavyHitters = window };
        if (result.GetValue(KvHeavy) is int heavy) h2o = h2o with { HeavyHitters = heavy };
        var element = FullKvCache.Parse(result.GetValue(KvType)!);
        if (element != FullKvElement.F16 && result.GetValue(Kv) != "full")
            throw new ArgumentException($"--kv-type {FullKvCache.Name(element)} applies to --kv full only");
        if (result.GetValue(Kv) == "streaming") streaming.Validate();
        if (result.GetValue(Kv) == "h2o") h2o.Validate();
        var options = new EngineOptions
        {
            Threads = result.GetValue(Threads),
            ContextLength = result.GetValue(Context),
            TokenizerPath = result.GetValue(Tokenizer),
            KvCache = new KvCacheOptions
            {
                Policy = result.GetValue(Kv)!,
                Kivi = new KiviOptions(result.GetValue(KvBits), result.GetValue(KvGroup), result.GetValue(KvResidual)),
                FullElement = element,
                FastTierBudgetBytes = result.GetValue(KvBudget),
                Streaming = streaming,
                H2o = h2o,
            },
        };
        return Progress.Run($"Loading {Path.GetFileName(path.TrimEnd('/'))}", () => Engine.Load(path, options));
    }
}
