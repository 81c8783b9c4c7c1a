using System.CommandLine;
using System.Text.Json;
using SpeCache.Generation;

namespace SpeCache.Cli.Commands;

/// <summary><c>specache generate</c>: continue a prompt (or stdin), streaming text as it comes.</summary>
static class GenerateCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt text (default: standard input if redirected, else start from BOS)." };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Tokens to generate.", DefaultValueFactory = _ => 256 };
        var sampling = new SamplingCliOptions();
        var json = new Option<bool>("--json") { Description = "Print one JSON object with the text and statistics instead of streaming." };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Keep generating past end-of-generation tokens (for measurements)." };
        var showStats = new Option<bool>("--stats") { Description = "Print the KV cache's memory per tier and counters (bytes moved, prefetch hits, ...) on stderr." };
        var statsJson = new Option<string?>("--stats-json") { Description = "Write the KV cache statistics to this JSON file." };

        var command = new Command("generate", "Generate text from a prompt.");
        common.AddTo(command);
        command.Options.Add(prompt);
        command.Options.Add(maxTokens);
        sampling.AddTo(command);
        command.Options.Add(json);
        command.Options.Add(ignoreEos);
        command.Options.Add(showStats);
        command.Options.Add(statsJson);

        command.SetAction(result => CliErrors.Run(() =>
        {
            string text = result.GetValue(prompt) ?? (Console.IsInputRedirected ? Console.In.ReadToEnd() : "");
            var options = new GenerationOptions
            {
                MaxTokens = result.GetValue(maxTokens),
                Sampling = sampling.Read(result),
                StopStrings = sampling.StopStrings(result),
                IgnoreEndOfGeneration = result.GetValue(ignoreEos),
            };
            if (options.MaxTokens < 0) throw new ArgumentException("--max-tokens must not be negative");

            using var engine = common.LoadEngine(result);
            int[] tokens = engine.Encode(text);
            if (tokens.Length == 0)
                throw new ArgumentException("the prompt is empty and the model has no BOS token to start from");
            using var cache = engine.CreateCache();
            var stats = new GenerationStats();
            bool asJson = result.GetValue(json);
            var output = new System.Text.StringBuilder();
            foreach (string piece in engine.Generator.Generate(tokens, options, cache, stats))
            {
                if (asJson) output.Append(piece);
                else Console.Out.Write(piece);
            }

            var kvReport = KvStatsReport.Collect(engine.Options.KvCache.Policy, cache);
            if (result.GetValue(statsJson) is string statsPath) KvStatsReport.Save(kvReport, statsPath);
            if (asJson)
            {
                var report = new
                {
                    model = common.ModelPath(result),
                    kv_cache = engine.Options.KvCache.Policy,
                    threads = engine.Model.Backend.Threads.ThreadCount,
                    prompt_tokens = stats.PromptTokens,
                    generated_tokens = stats.GeneratedTokens,
                    finish_reason = stats.FinishReason.ToString(),
                    text = output.ToString(),
                    tokens = stats.Tokens,
                    prefill_seconds = stats.PrefillTime.TotalSeconds,
                    decode_seconds = stats.DecodeTime.TotalSeconds,
                    prefill_tokens_per_second = stats.PrefillTokensPerSecond,
                    decode_tokens_per_second = stats.DecodeTokensPerSecond,
                    kv = kvReport,
                };
                Console.Out.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                Console.Out.WriteLine();
                Console.Error.WriteLine(
                    $"[{stats.GeneratedTokens} tokens, {stats.DecodeTokensPerSecond:F1} tokens/s decode, " +
                    $"{stats.PromptTokens} prompt tokens at {stats.PrefillTokensPerSecond:F1} tokens/s, finish: {stats.FinishReason}]");
                if (result.GetValue(showStats)) KvStatsReport.Print(kvReport, Console.Error);
            }
            return 0;
        }));
        return command;
    }
}
