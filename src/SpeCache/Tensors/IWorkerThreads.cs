namespace SpeCache.Tensors;

/// <summary>
/// Threads that split index-parallel work. An engine's KV caches take its backend's
/// <see cref="WorkerPool"/>, the matmuls' own threads, so a decode step runs on one set of threads,
/// as many as the user asked for, and passes from a matmul to attention and back without waking
/// a thread; caches made on their own take a <see cref="ParallelWorkers"/> on the .NET thread pool.
/// </summary>
public interface IWorkerThreads
{
    /// <summary>Threads the work is split over, the caller's included.</summary>
    int ThreadCount { get; }

    /// <summary>
    /// Runs <paramref name="body"/>(i) for every i in [0, <paramref name="count"/>) and returns when
    /// all are done. A call made while the threads are busy (from inside a run, as a batch's
    /// sequences attend in parallel and each cache would split its heads again, or from another
    /// thread) runs every index on its caller.
    /// </summary>
    void Run(int count, Action<int> body);
}
