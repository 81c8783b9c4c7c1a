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
    /// all are done; if any failed, the first failure is rethrown then. A call made while the
    /// threads are busy (from inside a run, as a batch's sequences attend in parallel and each
    /// cache would split its heads again, or from another thread) runs every index on its caller.
    /// </summary>
    void Run(int count, Action<int> body);
}

/// <summary>A run on the caller's thread alone, keeping <see cref="IWorkerThreads.Run"/>'s promise: every index runs, the first failure is rethrown after.</summary>
internal static class CallerRun
{
    public static void Run(int count, Action<int> body)
    {
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? failure = null;
        for (int i = 0; i < count; i++)
        {
            try
            {
                body(i);
            }
            catch (Exception e)
            {
                failure ??= System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
            }
        }
        failure?.Throw();
    }
}
