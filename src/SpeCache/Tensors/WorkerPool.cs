using System.Runtime.ExceptionServices;

namespace SpeCache.Tensors;

/// <summary>Work the pool splits by index ranges: each call gets one contiguous [start, end).</summary>
public interface IRangeJob
{
    void Execute(int start, int end);
}

/// <summary>
/// Persistent threads that split one range job at a time by contiguous ranges. The caller runs
/// the first range itself, so <c>threads = 1</c> means no other thread at all. Workers and the
/// caller spin briefly before blocking, because the transformer issues matmuls back to back
/// (a few microseconds apart in decode) and waking a blocked thread costs tens of microseconds;
/// the spin is short and yields, since cores here are shared.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    const int SpinsBeforeBlocking = 30;

    readonly Thread[] _threads;
    readonly object _gate = new();
    readonly ManualResetEventSlim _done = new(false, spinCount: 100);
    IRangeJob? _job;
    int _items, _grain;
    int _generation;
    int _pending;
    bool _disposed;
    ExceptionDispatchInfo? _error;

    public WorkerPool(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ThreadCount = threads;
        _threads = new Thread[threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int index = i + 1;
            _threads[i] = new Thread(() => WorkerLoop(index)) { IsBackground = true, Name = $"SpeCache worker {index}" };
            _threads[i].Start();
        }
    }

    public int ThreadCount { get; }

    /// <summary>
    /// Runs <paramref name="job"/> over [0, <paramref name="items"/>) and returns when all of it is
    /// done. Range boundaries are multiples of <paramref name="grain"/> (except the end), so a
    /// job can keep tiles whole. Not reentrant: one job at a time.
    /// </summary>
    public void Run(IRangeJob job, int items, int grain = 1)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (items <= 0) return;
        int chunks = (items + grain - 1) / grain;
        if (_threads.Length == 0 || chunks == 1)
        {
            job.Execute(0, items);
            return;
        }
        _job = job;
        _items = items;
        _grain = grain;
        _error = null;
        _done.Reset();
        Volatile.Write(ref _pending, _threads.Length);
        lock (_gate)
        {
            _generation++;
            Monitor.PulseAll(_gate);
        }
        try
        {
            Slice(0);
        }
        finally
        {
            _done.Wait();
            _job = null;
        }
        _error?.Throw();
    }

    /// <summary>Range of worker <paramref name="index"/>: chunks of <c>grain</c> dealt as evenly as possible.</summary>
    void Slice(int index)
    {
        int chunks = (_items + _grain - 1) / _grain;
        int first = (int)((long)chunks * index / ThreadCount);
        int last = (int)((long)chunks * (index + 1) / ThreadCount);
        int start = first * _grain, end = Math.Min(_items, last * _grain);
        if (start < end) _job!.Execute(start, end);
    }

    void WorkerLoop(int index)
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
            try
            {
                Slice(index);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null);
            }
            if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
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
