using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using SpeCache.Generation;
using SpeCache.Server;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Tests.Server;

/// <summary>
/// The real server, in this process, on a free loopback port, over a real model (stories260K by
/// default). Each test class gets its own, so counters in /metrics are its own.
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    /// <summary>A ChatML-style template: stories260K ships none.</summary>
    public const string ChatMlTemplate =
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    readonly WebApplication _app;

    TestServer(Engine engine, GenerationQueue queue, WebApplication app, Uri address)
    {
        Engine = engine;
        Queue = queue;
        _app = app;
        Address = address;
        Http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(2) };
    }

    public Engine Engine { get; }
    public GenerationQueue Queue { get; }
    public Uri Address { get; }
    public HttpClient Http { get; }
    public string ModelId => Path.GetFileName(Engine.File.Path.TrimEnd('/', Path.DirectorySeparatorChar));

    public static async Task<TestServer> StartAsync(string? model = null, bool chatTemplate = true, string? apiKey = null, int? defaultMaxTokens = null,
        BatchOptions? batch = null, SpeCache.KvCache.KvCacheOptions? kvCache = null, int contextLength = 0)
    {
        model ??= TestPaths.Stories260K;
        // One compute thread: test classes run in parallel on a 2-core machine.
        var engine = Engine.Load(model, new EngineOptions { Threads = 1, KvCache = kvCache ?? new(), ContextLength = contextLength });
        var queue = new GenerationQueue(engine, batch);
        var options = new ServerOptions
        {
            Port = 0,
            ApiKey = apiKey,
            ModelId = Path.GetFileName(model.TrimEnd('/', Path.DirectorySeparatorChar)),
            ChatTemplate = chatTemplate ? ChatTemplate.Parse(ChatMlTemplate) : null,
            DefaultMaxTokens = defaultMaxTokens,
        };
        var app = SpeCacheServer.Create(queue, options);
        var address = await SpeCacheServer.Start(app);
        return new TestServer(engine, queue, app, address);
    }

    /// <summary>POSTs JSON; with <paramref name="streamed"/> it returns at the headers, so the body can be read as it comes.</summary>
    public Task<HttpResponseMessage> PostJsonAsync(string path, string json, string? apiKey = null, bool streamed = false, CancellationToken cancellation = default)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (apiKey != null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        return Http.SendAsync(request, streamed ? HttpCompletionOption.ResponseHeadersRead : HttpCompletionOption.ResponseContentRead, cancellation);
    }

    public async Task<JsonElement> PostForJsonAsync(string path, string json)
    {
        using var response = await PostJsonAsync(path, json);
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    /// <summary>The samples of /metrics by name (labels included), after checking the whole text is valid Prometheus exposition.</summary>
    public async Task<Dictionary<string, double>> MetricsAsync()
    {
        using var response = await Http.GetAsync("/metrics");
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType);
        return PrometheusText.Parse(await response.Content.ReadAsStringAsync());
    }

    /// <summary>Greedy text straight from the engine (no server), the reference for output over HTTP.</summary>
    public static string GreedyReference(string model, Func<Engine, int[]> prompt, int maxTokens)
    {
        using var engine = Engine.Load(model, new EngineOptions { Threads = 1 });
        using var cache = engine.CreateCache();
        var options = new GenerationOptions { MaxTokens = maxTokens, Sampling = new SamplingOptions { Temperature = 0 } };
        return string.Concat(engine.Generator.Generate(prompt(engine), options, cache, new GenerationStats()));
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        Queue.Dispose();
        Engine.Dispose();
    }
}
