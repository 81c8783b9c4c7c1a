using System.Runtime.ExceptionServices;

namespace SpeCache.Tensors;

/// <summary>
/// Runs a body for worker indices 0 .. count-1 on the .NET thread pool and returns when all are
/// done, without allocating per call: the threads of a KV cache made without an engine (an
/// engine's caches run on its <see cref="WorkerPool"/>). Attention calls this once or twice per
/// layer and token, and <see cref="Parallel.For(int, int, Action{int})"/> allocates about 1.7 KB
/// each time (its task, loop state and partitioner), garbage on every token.
/// </summary>
/// <remarks>
/// The caller claims indices too, so it never waits for work no thread has started: when the pool
/// is busy (sequences of a batch already attend in parallel on pool threads) the caller runs every
/// index itself instead of blocking until the pool adds a thread. Queued helpers that start after
/// the indices are all claimed find nothing to do and return. One run at a time per instance: a
/// run started while another is under way runs on its caller alone.
/// </remarks>
public sealed class ParallelWorkers : IWorkerThreads
{
    readonly Helper _helper;
    readonly ManualResetEventSlim _done = new(false, spinCount: 200);
    Action<int>? _body;
    // The run's index count (high half) and next unclaimed index (low half), published in one write
    // so that a helper left in the queue by an earlier run claims either nothing or this run's work.
    long _claims;
    int _remaining;
    ExceptionDispatchInfo? _error;
    int _busy;

    /// <param name="threads">Threads a run spreads over at most, the caller's included; 0 means one per processor.</param>
    public ParallelWorkers(int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        ThreadCount = threads > 0 ? threads : Environment.ProcessorCount;
        _helper = new Helper(this);
    }

    public int ThreadCount { get; }

    /// <inheritdoc/>
    /// <remarks>
    /// On about <see cref="ThreadCount"/> threads, where the .NET pool has them free (a helper
    /// queued by an earlier run that starts late may join in).
    /// </remarks>
    public void Run(int count, Action<int> body)
    {
        if (count <= 1 || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            CallerRun.Run(count, body);
            return;
        }
        try
        {
            Spread(count, body);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    void Spread(int count, Action<int> body)
    {
        _body = body;
        _error = null;
        _done.Reset();
        Volatile.Write(ref _remaining, count);
        Volatile.Write(ref _claims, (long)count << 32); // last: whoever claims an index sees the body set above
        int helpers = Math.Min(count, ThreadCount) - 1;
        for (int i = 0; i < helpers; i++) ThreadPool.UnsafeQueueUserWorkItem(_helper, preferLocal: false);
        Work();
        _done.Wait();
        _body = null;
        _error?.Throw();
    }

    /// <summary>Claims and runs indices until none is left; the last one to finish releases the caller.</summary>
    void Work()
    {
        int i;
        while ((i = Claim()) >= 0)
        {
            try
            {
                _body!(i);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null);
            }
            if (Interlocked.Decrement(ref _remaining) == 0) _done.Set();
        }
    }

    int Claim()
    {
        while (true)
        {
            long claims = Volatile.Read(ref _claims);
            int next = (int)claims, count = (int)(claims >> 32);
            if (next >= count) return -1;
            if (Interlocked.CompareExchange(ref _claims, claims + 1, claims) == claims) return next;
        }
    }

    sealed class Helper(ParallelWorkers owner) : IThreadPoolWorkItem
    {
        public void Execute() => owner.Work();
    }
}
