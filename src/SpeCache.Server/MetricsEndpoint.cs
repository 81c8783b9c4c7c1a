using System.Globalization;
using System.Text;

namespace SpeCache.Server;

/// <summary>GET /metrics: the queue and the engine (<see cref="ServerStats"/>) in Prometheus' text format (version 0.0.4).</summary>
static class MetricsEndpoint
{
    public static IResult Handle(ServerState server)
    {
        var stats = ServerStats.Read(server);
        var text = new StringBuilder();
        Metric(text, "specache_requests_queued", "gauge", "Generation requests waiting for the engine.", stats.Queued);
        Metric(text, "specache_requests_running", "gauge", "Generation requests admitted to the batch (prefilling or decoding).", stats.Running);
        Metric(text, "specache_batch_size", "gauge", "Sequences in the last forward step.", stats.BatchSize);
        Metric(text, "specache_batch_max", "gauge", "Most sequences decoded together.", stats.MaxBatch);
        Metric(text, "specache_tokens_per_second", "gauge", "Tokens per second the whole batch generates (smoothed; 0 when idle).", stats.TokensPerSecond);
        Metric(text, "specache_requests_completed_total", "counter", "Generation requests that ran to a finish reason.", stats.RequestsCompleted);
        Metric(text, "specache_requests_cancelled_total", "counter", "Generation requests whose client went away first.", stats.RequestsCancelled);
        Metric(text, "specache_requests_refused_total", "counter", "Requests refused because their KV cache could never fit the fast-tier budget.", stats.RequestsRefused);
        Metric(text, "specache_prompt_tokens_total", "counter", "Prompt tokens prefilled.", stats.PromptTokens);
        Metric(text, "specache_tokens_generated_total", "counter", "Tokens generated, cancelled requests included.", stats.TokensGenerated);
        Metric(text, "specache_last_request_tokens_per_second", "gauge", "Decode speed of the last completed request.", stats.LastRequestTokensPerSecond);
        Metric(text, "specache_context_length", "gauge", "Tokens per sequence (prompt and completion).", stats.ContextLength);
        var memory = stats.KvCache;
        text.Append("# HELP specache_kv_cache_bytes Bytes the KV cache holds, per tier (fast: read every step; host: big and slow).\n");
        text.Append("# TYPE specache_kv_cache_bytes gauge\n");
        text.Append(CultureInfo.InvariantCulture, $"specache_kv_cache_bytes{{tier=\"fast\"}} {memory.FastTierBytes}\n");
        text.Append(CultureInfo.InvariantCulture, $"specache_kv_cache_bytes{{tier=\"host\"}} {memory.HostTierBytes}\n");
        Metric(text, "specache_kv_cache_fast_tier_peak_bytes", "gauge", "The most fast-tier bytes the running requests' KV caches held at once.", memory.FastTierPeakBytes);
        if (memory.FastTierBudgetBytes is long budget)
            Metric(text, "specache_kv_cache_fast_tier_budget_bytes", "gauge", "Fast-tier bytes all running requests may hold together.", budget);
        return Results.Text(text.ToString(), "text/plain; version=0.0.4; charset=utf-8");
    }

    static void Metric(StringBuilder text, string name, string type, string help, double value)
    {
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n");
        text.Append(CultureInfo.InvariantCulture, $"# TYPE {name} {type}\n");
        text.Append(CultureInfo.InvariantCulture, $"{name} {value.ToString("R", CultureInfo.InvariantCulture)}\n");
    }
}
