using SpeCache.Generation;
using SpeCache.Tests.Generation;
using System.Net;
using System.Text.Json;

namespace SpeCache.Tests.Server;

/// <summary>One engine, requests batched or queued; a client that goes away stops its generation and frees its KV cache.</summary>
public sealed class QueueAndCancellationTests
{
    /// <summary>Polls /metrics until <paramref name="condition"/> holds; fails after a generous bound instead of hanging.</summary>
    static async Task<Dictionary<string, double>> WaitForMetrics(TestServer server, Func<Dictionary<string, double>, bool> condition, string what)
    {
        for (int i = 0; i < 600; i++)
        {
            var metrics = await server.MetricsAsync();
            if (condition(metrics)) return metrics;
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
        throw new Xunit.Sdk.XunitException($"/metrics never showed {what}");
    }

    [Fact]
    public async Task AbandonedStreamIsCancelledAndTheQueuedRequestThenRuns()
    {
        // A batch of one: the second request must wait for the first. The first (4000 tokens,
        // ignore_eos) decodes in about a second on a fast core, less than a loaded machine may take
        // to open the second connection, so once it has made a few tokens the engine's loop is held
        // between two steps until its client has gone: the first is still running then, whatever
        // the machine's speed.
        await using var server = await TestServer.StartAsync(TestPaths.Llama2TinyRandom, chatTemplate: false, batch: new BatchOptions { MaxBatch = 1 });
        QueueHold.UntilAbandoned(server.Queue, fromStep: 32); // a prefill step, then a token a step
        const int longRequest = 4000;
        using var abandon = new CancellationTokenSource();
        var first = await server.PostJsonAsync("/v1/completions",
            $$"""{"prompt":"Hello","max_tokens":{{longRequest}},"ignore_eos":true,"stream":true}""", streamed: true, cancellation: abandon.Token);
        var stream = await first.Content.ReadAsStreamAsync(TestContext.Current.CancellationToken);
        var reader = new StreamReader(stream);
        string? firstEvent = await reader.ReadLineAsync(TestContext.Current.CancellationToken);
        Assert.StartsWith("data: {", firstEvent);

        // A second request arrives while the first generates: it waits its turn.
        var second = server.PostJsonAsync("/v1/completions", """{"prompt":"Hello","max_tokens":8,"ignore_eos":true}""",
            cancellation: TestContext.Current.CancellationToken);
        var queued = System.Diagnostics.Stopwatch.StartNew();
        while (!(server.Queue.Queued == 1 && server.Queue.Running == 1))
        {
            Assert.True(queued.Elapsed < TimeSpan.FromSeconds(30), "the second request never queued behind the first");
            await Task.Delay(1, TestContext.Current.CancellationToken);
        }

        // The first client goes away.
        abandon.Cancel();
        first.Dispose();

        using var secondResponse = await second;
        Assert.Equal(HttpStatusCode.OK, secondResponse.StatusCode);
        var body = JsonDocument.Parse(await secondResponse.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement;
        Assert.Equal(8, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var metrics = await WaitForMetrics(server, m => m["specache_requests_running"] == 0, "the engine idle");
        Assert.Equal(0, metrics["specache_kv_cache_bytes{tier=\"fast\"}"]); // every cache freed
        Assert.Equal(1, metrics["specache_requests_cancelled_total"]);
        Assert.Equal(1, metrics["specache_requests_completed_total"]);
        // The abandoned generation stopped early: far fewer tokens than it asked for were made.
        Assert.True(metrics["specache_tokens_generated_total"] < longRequest, $"{metrics["specache_tokens_generated_total"]} tokens generated");
    }

    [Fact]
    public async Task ConcurrentRequestsAreBatchedWithTheSameResults()
    {
        await using var server = await TestServer.StartAsync();
        string[] prompts = ["Once upon a time", "The cat", "Tom and Lily", "One day"];
        async Task<string> Greedy(string prompt) => (await server.PostForJsonAsync("/v1/completions",
            $$"""{"prompt":"{{prompt}}","max_tokens":16,"temperature":0}""")).GetProperty("choices")[0].GetProperty("text").GetString()!;

        string[] together = await Task.WhenAll(prompts.Select(Greedy));
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(TestServer.GreedyReference(TestPaths.Stories260K, engine => engine.Encode(prompts[i]), 16), together[i]);
        var metrics = await server.MetricsAsync();
        Assert.Equal(prompts.Length, metrics["specache_requests_completed_total"]);
        Assert.True(server.Queue.Steps < prompts.Length * 16, $"{server.Queue.Steps} steps: the requests were not batched");
    }

    [Fact]
    public async Task MetricsAreValidPrometheusTextAndCountersMove()
    {
        await using var server = await TestServer.StartAsync();
        var before = await server.MetricsAsync();
        Assert.Equal(0, before["specache_requests_queued"]);
        Assert.Equal(0, before["specache_requests_running"]);
        Assert.Equal(0, before["specache_tokens_generated_total"]);
        // No request, no cache.
        Assert.Equal(0, before["specache_kv_cache_bytes{tier=\"fast\"}"]);
        Assert.Equal(0, before["specache_kv_cache_bytes{tier=\"host\"}"]);

        var body = await server.PostForJsonAsync("/v1/completions", """{"prompt":"Once upon a time","max_tokens":20,"ignore_eos":true}""");
        int generated = body.GetProperty("usage").GetProperty("completion_tokens").GetInt32();

        var after = await server.MetricsAsync();
        Assert.Equal(20, generated);
        Assert.Equal(generated, after["specache_tokens_generated_total"]);
        Assert.Equal(body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(), after["specache_prompt_tokens_total"]);
        Assert.Equal(1, after["specache_requests_completed_total"]);
        Assert.True(after["specache_last_request_tokens_per_second"] > 0);
        // The request's full 16-bit cache, sized to its prompt and max_tokens: 2 (K, V) x 5 layers x 32
        // (4 KV heads of 8) x (prompt + 20) positions x 2 bytes, held while it ran and freed after.
        Assert.Equal(2 * 5 * 32 * (body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() + 20) * 2, after["specache_kv_cache_fast_tier_peak_bytes"]);
        Assert.Equal(0, after["specache_kv_cache_bytes{tier=\"fast\"}"]);
    }

    [Fact]
    public async Task ARequestWhoseCacheCouldNeverFitTheBudgetIsA400()
    {
        // A budget for a full 16-bit cache of 100 tokens (2 x 5 layers x 32 x 2 bytes each).
        await using var server = await TestServer.StartAsync(batch: new BatchOptions { FastTierBudgetBytes = 100 * 640 });
        foreach (bool stream in new[] { false, true })
        {
            using var refused = await server.PostJsonAsync("/v1/completions", $$"""{"prompt":"Once upon a time","max_tokens":200,"stream":{{(stream ? "true" : "false")}}}""",
                cancellation: TestContext.Current.CancellationToken);
            var error = await ValidationTests.AssertError(refused, HttpStatusCode.BadRequest, "max_tokens", "kv_budget_exceeded");
            Assert.Contains("budget", error.GetProperty("message").GetString());
        }
        var body = await server.PostForJsonAsync("/v1/completions", """{"prompt":"Once upon a time","max_tokens":20}""");
        Assert.InRange(body.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), 1, 20); // a request that fits is served
        var metrics = await server.MetricsAsync();
        Assert.Equal(2, metrics["specache_requests_refused_total"]);
        Assert.Equal(100 * 640, metrics["specache_kv_cache_fast_tier_budget_bytes"]);
    }

    [Fact]
    public async Task ARequestCanChooseItsOwnKvCachePolicy()
    {
        await using var server = await TestServer.StartAsync();
        var body = await server.PostForJsonAsync("/v1/completions", """{"prompt":"Once upon a time","max_tokens":120,"temperature":0,"ignore_eos":true,"kv_cache":"kivi:bits=1,group=32,residual=32"}""");
        string text = body.GetProperty("choices")[0].GetProperty("text").GetString()!;

        string Alone(string policy)
        {
            using var engine = Engine.Load(TestPaths.Stories260K, new EngineOptions { Threads = 1, KvCache = SpeCache.Eval.PolicySpec.Parse(policy) });
            using var cache = engine.CreateCache();
            var options = new GenerationOptions { MaxTokens = 120, Sampling = new SamplingOptions { Temperature = 0 }, IgnoreEndOfGeneration = true };
            return string.Concat(engine.Generator.Generate(engine.Encode("Once upon a time"), options, cache, new GenerationStats(), TestContext.Current.CancellationToken));
        }
        Assert.Equal(Alone("kivi:bits=1,group=32,residual=32"), text);
        // 1-bit codes past the residual window change the story: the request really ran its own policy.
        Assert.NotEqual(Alone("full"), text);
    }
}
