using SpeCache.Eval;

namespace SpeCache.Server;

/// <summary>
/// One reading of the queue and the engine: what /metrics writes as Prometheus text and /v1/stats
/// as JSON, read in one place so that the two always report the same figures.
/// </summary>
sealed record ServerStats
{
    public required string Model { get; init; }
    /// <summary>The server's KV cache policy (a request's kv_cache may pick another for itself).</summary>
    public required string KvPolicy { get; init; }
    /// <summary>Tokens per sequence (prompt and completion).</summary>
    public required int ContextLength { get; init; }
    public required int Queued { get; init; }
    public required int Running { get; init; }
    /// <summary>Sequences in the last forward step.</summary>
    public required int BatchSize { get; init; }
    public required int MaxBatch { get; init; }
    /// <summary>Tokens per second the whole batch generates (smoothed; 0 when idle).</summary>
    public required double TokensPerSecond { get; init; }
    public required double LastRequestTokensPerSecond { get; init; }
    public required long RequestsCompleted { get; init; }
    public required long RequestsCancelled { get; init; }
    public required long RequestsRefused { get; init; }
    public required long PromptTokens { get; init; }
    public required long TokensGenerated { get; init; }
    public required KvCacheStats KvCache { get; init; }

    public static ServerStats Read(ServerState server)
    {
        var queue = server.Queue;
        var memory = queue.CacheMemory;
        return new ServerStats
        {
            Model = server.ModelId,
            KvPolicy = PolicySpec.Label(queue.Engine.Options.KvCache),
            ContextLength = queue.Engine.ContextLength,
            Queued = queue.Queued,
            Running = queue.Running,
            BatchSize = queue.LastBatchSize,
            MaxBatch = queue.Batch.MaxBatch,
            TokensPerSecond = queue.Throughput,
            LastRequestTokensPerSecond = queue.LastTokensPerSecond,
            RequestsCompleted = queue.Completed,
            RequestsCancelled = queue.Cancelled,
            RequestsRefused = queue.Refused,
            PromptTokens = queue.PromptTokens,
            TokensGenerated = queue.GeneratedTokens,
            KvCache = new KvCacheStats(memory.FastTierBytes, memory.HostTierBytes, queue.PeakFastTierBytes, queue.Batch.FastTierBudgetBytes),
        };
    }
}

/// <summary>
/// Bytes the running requests' KV caches hold per tier (fast: read every step; host: big and slow),
/// the most the fast tier held at once, and its budget (null: none, <c>--batch-budget</c> unset).
/// </summary>
sealed record KvCacheStats(long FastTierBytes, long HostTierBytes, long FastTierPeakBytes, long? FastTierBudgetBytes);
