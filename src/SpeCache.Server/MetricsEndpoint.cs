using System.Globalization;
using System.Text;

namespace SpeCache.Server;

/// <summary>GET /metrics: the queue and the engine in Prometheus' text format (version 0.0.4).</summary>
static class MetricsEndpoint
{
    public static IResult Handle(ServerState server)
    {
        var queue = server.Queue;
        var memory = queue.CacheMemory;
        var text = new StringBuilder();
        Metric(text, "specache_requests_queued", "gauge", "Generation requests waiting for the engine.", queue.Queued);
        Metric(text, "specache_requests_running", "gauge", "Generation requests running on the engine (one at a time).", queue.Running);
        Metric(text, "specache_requests_completed_total", "counter", "Generation requests that ran to a finish reason.", queue.Completed);
        Metric(text, "specache_requests_cancelled_total", "counter", "Generation requests whose client went away first.", queue.Cancelled);
        Metric(text, "specache_prompt_tokens_total", "counter", "Prompt tokens prefilled.", queue.PromptTokens);
        Metric(text, "specache_tokens_generated_total", "counter", "Tokens generated, cancelled requests included.", queue.GeneratedTokens);
        Metric(text, "specache_last_request_tokens_per_second", "gauge", "Decode speed of the last completed request.", queue.LastTokensPerSecond);
        Metric(text, "specache_context_length", "gauge", "Tokens per sequence (prompt and completion).", queue.Engine.ContextLength);
        text.Append("# HELP specache_kv_cache_bytes Bytes the KV cache holds, per tier (fast: read every step; host: big and slow).\n");
        text.Append("# TYPE specache_kv_cache_bytes gauge\n");
        text.Append(CultureInfo.InvariantCulture, $"specache_kv_cache_bytes{{tier=\"fast\"}} {memory.FastTierBytes}\n");
        text.Append(CultureInfo.InvariantCulture, $"specache_kv_cache_bytes{{tier=\"host\"}} {memory.HostTierBytes}\n");
        return Results.Text(text.ToString(), "text/plain; version=0.0.4; charset=utf-8");
    }

    static void Metric(StringBuilder text, string name, string type, string help, double value)
    {
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n");
        text.Append(CultureInfo.InvariantCulture, $"# TYPE {name} {type}\n");
        text.Append(CultureInfo.InvariantCulture, $"{name} {value.ToString("R", CultureInfo.InvariantCulture)}\n");
    }
}
