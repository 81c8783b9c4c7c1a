using System.CommandLine;
using Microsoft.Extensions.Hosting;
using SpeCache.Generation;
using SpeCache.KvCache.Tiers;
using SpeCache.Server;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Cli.Commands;

/// <summary><c>specache serve</c>: the OpenAI-compatible HTTP server over one model, until Ctrl+C.</summary>
static class ServeCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var host = new Option<string>("--host") { Description = "Address to listen on (0.0.0.0 for every interface).", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0 picks a free one).", DefaultValueFactory = _ => 8080 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on every endpoint but /health and the web chat page (default: the SPECACHE_API_KEY environment variable, else none)." };
        var template = new Option<string?>("--chat-template") { Description = "A Jinja chat template file to use instead of the model's." };
        var maxTokens = new Option<int?>("--max-tokens", "-n") { Description = "Tokens per request when it sets no max_tokens (default: up to the end of the context)." };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most requests decoded together in one forward pass (continuous batching).", DefaultValueFactory = _ => 8 };
        var batchBudget = new Option<long?>("--batch-budget") { Description = "Most fast-tier KV bytes all running requests may hold together, e.g. 1GiB: a request waits until its cache fits, and one that never could is refused.", CustomParser = CommonOptions.ParseBytes };
        var sampling = new SamplingCliOptions();
        var command = new Command("serve", "Serve the model over HTTP with OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics, /v1/stats) and a web chat page at /.");
        common.AddTo(command);
        command.Options.Add(host);
        command.Options.Add(port);
        command.Options.Add(apiKey);
        command.Options.Add(template);
        command.Options.Add(maxTokens);
        command.Options.Add(maxBatch);
        command.Options.Add(batchBudget);
        sampling.AddTo(command);

        command.SetAction(result => CliErrors.Run(() =>
        {
            if (result.GetValue(port) is < 0 or > 65535) throw new ArgumentException("--port must be between 0 and 65535");
            if (result.GetValue(maxTokens) < 0) throw new ArgumentException("--max-tokens must not be negative");
            if (result.GetValue(maxBatch) < 1) throw new ArgumentException("--max-batch must be at least 1");
            var defaults = sampling.Read(result);
            defaults.Validate();
            // Parse the template before loading the model, so a broken file fails at once.
            var chatTemplate = result.GetValue(template) is { } path ? ChatTemplate.Parse(File.ReadAllText(path)) : null;
            string modelPath = common.ModelPath(result);
            using var engine = common.LoadEngine(result);
            var batch = new BatchOptions { MaxBatch = result.GetValue(maxBatch), FastTierBudgetBytes = result.GetValue(batchBudget) };
            batch.Validate();
            using var queue = new GenerationQueue(engine, batch);
            var options = new ServerOptions
            {
                Host = result.GetValue(host)!,
                Port = result.GetValue(port),
                ApiKey = result.GetValue(apiKey) ?? NonEmpty(Environment.GetEnvironmentVariable("SPECACHE_API_KEY")),
                ModelId = Path.GetFileName(modelPath.TrimEnd('/', Path.DirectorySeparatorChar)),
                ChatTemplate = chatTemplate,
                Sampling = defaults,
                DefaultMaxTokens = result.GetValue(maxTokens),
            };
            using var app = SpeCacheServer.Create(queue, options);
            Uri address = SpeCacheServer.Start(app).GetAwaiter().GetResult();
            Console.Error.WriteLine($"specache: serving {options.ModelId} at {address} (context {engine.ContextLength}, KV {engine.Options.KvCache.Policy}, batch up to {batch.MaxBatch}{(batch.FastTierBudgetBytes is long b ? $" within {ByteSize.Format(b)} of fast tier" : "")}{(options.ApiKey != null ? ", API key required" : "")}); open {address} in a browser to chat; Ctrl+C stops");
            app.WaitForShutdownAsync().GetAwaiter().GetResult();
            return 0;
        }));
        return command;
    }

    static string? NonEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;
}
