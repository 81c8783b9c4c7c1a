using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using SpeCache.Generation;

namespace SpeCache.Tests.Server;

/// <summary>GET /v1/stats: the figures of /metrics as JSON, behind the API key as /metrics is.</summary>
public sealed class StatsEndpointTests
{
    internal static async Task<JsonElement> StatsAsync(TestServer server, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/stats");
        if (apiKey != null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        using var response = await server.Http.SendAsync(request, TestContext.Current.CancellationToken);
        string body = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {body}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    static string[] Names(JsonElement element) => [.. element.EnumerateObject().Select(p => p.Name)];

    [Fact]
    public async Task StatsHaveTheShapeAndTheFiguresOfMetrics()
    {
        // A budget for a full 16-bit cache of 200 tokens (2 x 5 layers x 32 x 2 bytes each).
        const long budget = 200 * 640;
        await using var server = await TestServer.StartAsync(batch: new BatchOptions { FastTierBudgetBytes = budget, MaxBatch = 3 });

        var idle = await StatsAsync(server);
        Assert.Equal(
            ["model", "kv_policy", "context_length", "queued", "running", "batch_size", "max_batch", "tokens_per_second",
             "last_request_tokens_per_second", "requests_completed", "requests_cancelled", "requests_refused",
             "prompt_tokens", "tokens_generated", "kv_cache"],
            Names(idle));
        Assert.Equal(["fast_tier_bytes", "host_tier_bytes", "fast_tier_peak_bytes", "fast_tier_budget_bytes"], Names(idle.GetProperty("kv_cache")));
        Assert.Equal("stories260K.bin", idle.GetProperty("model").GetString());
        Assert.Equal("full", idle.GetProperty("kv_policy").GetString());
        Assert.Equal(512, idle.GetProperty("context_length").GetInt32());
        Assert.Equal(3, idle.GetProperty("max_batch").GetInt32());
        Assert.Equal(0, idle.GetProperty("tokens_generated").GetInt64());
        Assert.Equal(0, idle.GetProperty("kv_cache").GetProperty("fast_tier_bytes").GetInt64());
        Assert.Equal(0, idle.GetProperty("kv_cache").GetProperty("fast_tier_peak_bytes").GetInt64());
        Assert.Equal(budget, idle.GetProperty("kv_cache").GetProperty("fast_tier_budget_bytes").GetInt64());

        var body = await server.PostForJsonAsync("/v1/completions", """{"prompt":"Once upon a time","max_tokens":20,"ignore_eos":true}""");
        int promptTokens = body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();

        var stats = await StatsAsync(server);
        var metrics = await server.MetricsAsync();
        Assert.Equal(20, stats.GetProperty("tokens_generated").GetInt64());
        Assert.Equal(promptTokens, stats.GetProperty("prompt_tokens").GetInt64());
        Assert.Equal(1, stats.GetProperty("requests_completed").GetInt64());
        Assert.True(stats.GetProperty("last_request_tokens_per_second").GetDouble() > 0);
        var memory = stats.GetProperty("kv_cache");
        // The request's full 16-bit cache, sized to its prompt and max_tokens, held while it ran and freed after.
        Assert.Equal(2 * 5 * 32 * (promptTokens + 20) * 2, memory.GetProperty("fast_tier_peak_bytes").GetInt64());
        Assert.Equal(0, memory.GetProperty("fast_tier_bytes").GetInt64());

        // Every figure is the one /metrics reports (the server is idle, so nothing moved in between).
        (string Metric, double Value)[] pairs =
        [
            ("specache_requests_queued", stats.GetProperty("queued").GetDouble()),
            ("specache_requests_running", stats.GetProperty("running").GetDouble()),
            ("specache_batch_size", stats.GetProperty("batch_size").GetDouble()),
            ("specache_batch_max", stats.GetProperty("max_batch").GetDouble()),
            ("specache_tokens_per_second", stats.GetProperty("tokens_per_second").GetDouble()),
            ("specache_last_request_tokens_per_second", stats.GetProperty("last_request_tokens_per_second").GetDouble()),
            ("specache_requests_completed_total", stats.GetProperty("requests_completed").GetDouble()),
            ("specache_requests_cancelled_total", stats.GetProperty("requests_cancelled").GetDouble()),
            ("specache_requests_refused_total", stats.GetProperty("requests_refused").GetDouble()),
            ("specache_prompt_tokens_total", stats.GetProperty("prompt_tokens").GetDouble()),
            ("specache_tokens_generated_total", stats.GetProperty("tokens_generated").GetDouble()),
            ("specache_context_length", stats.GetProperty("context_length").GetDouble()),
            ("specache_kv_cache_bytes{tier=\"fast\"}", memory.GetProperty("fast_tier_bytes").GetDouble()),
            ("specache_kv_cache_bytes{tier=\"host\"}", memory.GetProperty("host_tier_bytes").GetDouble()),
            ("specache_kv_cache_fast_tier_peak_bytes", memory.GetProperty("fast_tier_peak_bytes").GetDouble()),
            ("specache_kv_cache_fast_tier_budget_bytes", memory.GetProperty("fast_tier_budget_bytes").GetDouble()),
        ];
        foreach (var (metric, value) in pairs)
            Assert.True(metrics[metric] == value, $"{metric}: /metrics {metrics[metric]}, /v1/stats {value}");
    }

    [Fact]
    public async Task WithoutABudgetTheBudgetIsNullAndThePolicyIsTheServers()
    {
        await using var server = await TestServer.StartAsync(kvCache: SpeCache.Eval.PolicySpec.Parse("specache:bits=1,k=16"));
        var stats = await StatsAsync(server);
        Assert.Equal(JsonValueKind.Null, stats.GetProperty("kv_cache").GetProperty("fast_tier_budget_bytes").ValueKind);
        Assert.Equal("specache 1-bit g32 k16", stats.GetProperty("kv_policy").GetString());

        // A request with its own policy does not change what the server's is.
        await server.PostForJsonAsync("/v1/completions", """{"prompt":"Once upon a time","max_tokens":4,"kv_cache":"kivi:bits=2"}""");
        Assert.Equal("specache 1-bit g32 k16", (await StatsAsync(server)).GetProperty("kv_policy").GetString());
    }

    [Fact]
    public async Task StatsNeedTheApiKeyAsMetricsDo()
    {
        await using var server = await TestServer.StartAsync(apiKey: "sk-test-123");
        foreach (string path in new[] { "/v1/stats", "/metrics" })
        {
            using var missing = await server.Http.GetAsync(path, TestContext.Current.CancellationToken);
            var error = await ValidationTests.AssertError(missing, HttpStatusCode.Unauthorized, null, "invalid_api_key");
            Assert.Contains("didn't provide an API key", error.GetProperty("message").GetString());

            using var wrongRequest = new HttpRequestMessage(HttpMethod.Get, path);
            wrongRequest.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "sk-wrong");
            using var wrong = await server.Http.SendAsync(wrongRequest, TestContext.Current.CancellationToken);
            error = await ValidationTests.AssertError(wrong, HttpStatusCode.Unauthorized, null, "invalid_api_key");
            Assert.Equal("Incorrect API key provided.", error.GetProperty("message").GetString());
        }
        var stats = await StatsAsync(server, "sk-test-123");
        Assert.Equal(server.ModelId, stats.GetProperty("model").GetString());
    }
}
