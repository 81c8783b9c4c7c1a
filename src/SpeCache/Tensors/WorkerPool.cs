using System.Runtime.ExceptionServices;

namespace SpeCache.Tensors;

/// <summary>Work the pool splits by index ranges: each call gets one contiguous [start, end).</summary>
public interface IRangeJob
{
    void Execute(int start, int end);
}

/// <summary>
/// Persistent threads that split one range job at a time into contiguous chunks, which every
/// thread claims in turn. The caller claims chunks too, so <c>threads = 1</c> means no other
/// thread at all. Workers and the
/// caller spin briefly before blocking, because the transformer issues matmuls back to back
/// (a few microseconds apart in decode) and waking a blocked thread costs tens of microseconds;
/// the spin is short and yields, since cores here are shared. One job at a time: a job started
/// while another runs (from inside it, or from another thread) runs on its caller alone.
/// </summary>
public sealed class WorkerPool : IWorkerThreads, IDisposable
{
    const int SpinsBeforeBlocking = 30;

    /// <summary>
    /// Chunks per thread a job is cut into, claimed from a shared counter: on a shared machine one
    /// core is often slowed for a while, and with one fixed range per thread every job waited for
    /// it; with several chunks each, the other threads take over its share.
    /// </summary>
    const int ChunksPerThread = 8;

    readonly Thread[] _threads;
    readonly object _gate = new();
    readonly ManualResetEventSlim _done = new(false, spinCount: 100);
    IRangeJob? _job;
    int _items, _chunkSize, _chunks;
    int _nextChunk;
    int _generation;
    int _pending;
    int _busy; // 1 while a job is spread over the threads
    bool _disposed;
    readonly IndexJob _indexJob = new();
    ExceptionDispatchInfo? _error;

    public WorkerPool(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ThreadCount = threads;
        _threads = new Thread[threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int index = i + 1;
            _threads[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"SpeCache worker {index}" };
            _threads[i].Start();
        }
    }

    public int ThreadCount { get; }

    /// <summary>
    /// Runs <paramref name="job"/> over [0, <paramref name="items"/>) and returns when all of it is
    /// done. Range boundaries are multiples of <paramref name="grain"/> (except the end), so a
    /// job can keep tiles whole. A job started while another runs runs on its caller alone.
    /// </summary>
    public void Run(IRangeJob job, int items, int grain = 1)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (items <= 0) return;
        int chunks = (items + grain - 1) / grain;
        if (_threads.Length == 0 || chunks == 1 || !TryTake())
        {
            job.Execute(0, items);
            return;
        }
        try
        {
            Spread(job, items, grain, chunks);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <inheritdoc/>
    public void Run(int count, Action<int> body)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count <= 0) return;
        if (_threads.Length == 0 || count == 1 || !TryTake())
        {
            CallerRun.Run(count, body);
            return;
        }
        try
        {
            _indexJob.Body = body;
            Spread(_indexJob, count, 1, count);
        }
        finally
        {
            _indexJob.Body = null;
            Volatile.Write(ref _busy, 0);
        }
    }

    bool TryTake() => Interlocked.CompareExchange(ref _busy, 1, 0) == 0;

    void Spread(IRangeJob job, int items, int grain, int chunks)
    {
        _job = job;
        _items = items;
        _chunkSize = (chunks + ChunksPerThread * ThreadCount - 1) / (ChunksPerThread * ThreadCount) * grain;
        _chunks = (items + _chunkSize - 1) / _chunkSize;
        _nextChunk = 0;
        _error = null;
        _done.Reset();
        Volatile.Write(ref _pending, _threads.Length);
        lock (_gate)
        {
            _generation++;
            Monitor.PulseAll(_gate);
        }
        Claim();
        _done.Wait();
        _job = null;
        _error?.Throw();
    }

    /// <summary>
    /// Claims chunks until none are left; each thread, the caller included, runs this. A chunk that
    /// fails is noted and the thread goes on, so every chunk runs and the run's first failure
    /// reaches the caller at the end.
    /// </summary>
    void Claim()
    {
        int chunk;
        while ((chunk = Interlocked.Increment(ref _nextChunk) - 1) < _chunks)
        {
            try
            {
                _job!.Execute(chunk * _chunkSize, Math.Min(_items, (chunk + 1) * _chunkSize));
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null);
            }
        }
    }

    void WorkerLoop()
    {
        int seen = 0;
        while (true)
        {
            for (int spin = 0; spin < SpinsBeforeBlocking && Volatile.Read(ref _generation) == seen; spin++)
                Thread.SpinWait(spin < 6 ? 1 << spin : 1 << 6); // ~80 µs in all, then block
            lock (_gate)
            {
                while (_generation == seen && !_disposed) Monitor.Wait(_gate);
                if (_disposed) return;
                seen = _generation;
            }
            Claim();
            if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
        }
    }

    /// <summary>Index-parallel work as a range job: the pool's one instance, its body set per run.</summary>
    sealed class IndexJob : IRangeJob
    {
        public Action<int>? Body;

        public void Execute(int start, int end)
        {
            for (int i = start; i < end; i++) Body!(i);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Monitor.PulseAll(_gate);
        }
        foreach (var t in _threads) t.Join();
        _done.Dispose();
    }
}
