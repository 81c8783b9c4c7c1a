using SpeCache.Tensors;

namespace SpeCache.Tests.Tensors;

public class WorkerPoolTests
{
    sealed class CountingJob(int items) : IRangeJob
    {
        public readonly int[] Visits = new int[items];
        public readonly List<(int, int)> Ranges = [];

        public void Execute(int start, int end)
        {
            lock (Ranges) Ranges.Add((start, end));
            for (int i = start; i < end; i++) Interlocked.Increment(ref Visits[i]);
        }
    }

    [Theory]
    [InlineData(1, 10, 1)]
    [InlineData(2, 1, 1)]
    [InlineData(3, 100, 16)]
    [InlineData(4, 7, 1)]
    [InlineData(5, 4096, 16)]
    public void EveryItemRunsExactlyOnceInGrainAlignedRanges(int threads, int items, int grain)
    {
        using var pool = new WorkerPool(threads);
        for (int repeat = 0; repeat < 50; repeat++)
        {
            var job = new CountingJob(items);
            pool.Run(job, items, grain);
            Assert.All(job.Visits, v => Assert.Equal(1, v));
            Assert.All(job.Ranges, r => Assert.True(r.Item1 % grain == 0 && r.Item2 > r.Item1));
            Assert.True(job.Ranges.Count <= 8 * threads, $"{job.Ranges.Count} chunks for {threads} threads");
        }
    }

    /// <summary>
    /// A worker that stalls inside its first chunk (as a core the machine slows does) until three
    /// quarters of the items are done: the caller must take over the rest of the job, not wait for
    /// a range that was the stalled worker's alone.
    /// </summary>
    sealed class StallingJob(int items, int callerThread) : IRangeJob
    {
        public readonly int[] Visits = new int[items];
        readonly ManualResetEventSlim _workerStarted = new();
        int _done;
        int OthersShare => items * 3 / 4;
        public bool WorkerWaitedInVain, CallerWaitedInVain;

        public void Execute(int start, int end)
        {
            if (Environment.CurrentManagedThreadId == callerThread)
                CallerWaitedInVain |= !_workerStarted.Wait(TimeSpan.FromSeconds(10));
            else if (!_workerStarted.IsSet)
            {
                _workerStarted.Set();
                var clock = System.Diagnostics.Stopwatch.StartNew();
                // With one fixed range per thread the others could do only half.
                while (Volatile.Read(ref _done) < OthersShare && clock.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(1);
                WorkerWaitedInVain = Volatile.Read(ref _done) < OthersShare;
            }
            for (int i = start; i < end; i++)
            {
                Interlocked.Increment(ref Visits[i]);
                Interlocked.Increment(ref _done);
            }
        }
    }

    [Fact]
    public void OtherThreadsTakeOverTheShareOfAStalledWorker()
    {
        using var pool = new WorkerPool(2);
        var job = new StallingJob(64, Environment.CurrentManagedThreadId);
        pool.Run(job, 64);
        Assert.False(job.CallerWaitedInVain, "the worker never started");
        Assert.False(job.WorkerWaitedInVain, "the caller left the stalled worker's share undone");
        Assert.All(job.Visits, v => Assert.Equal(1, v));
    }

    sealed class ThrowingJob : IRangeJob
    {
        public void Execute(int start, int end)
        {
            if (start > 0) throw new InvalidOperationException("worker failed");
        }
    }

    [Fact]
    public void WorkerExceptionReachesTheCallerAndPoolStaysUsable()
    {
        using var pool = new WorkerPool(3);
        Assert.Throws<InvalidOperationException>(() => pool.Run(new ThrowingJob(), 30));
        var job = new CountingJob(30);
        pool.Run(job, 30);
        Assert.All(job.Visits, v => Assert.Equal(1, v));
    }

    [Fact]
    public void DisposeStopsThreadsAndRefusesWork()
    {
        var pool = new WorkerPool(4);
        pool.Run(new CountingJob(8), 8);
        pool.Dispose();
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Run(new CountingJob(8), 8));
    }

    /// <summary>Two threads that share a pool and start jobs at the same time both get every item run once: the one that finds it busy runs its job itself.</summary>
    [Fact]
    public void JobsStartedTogetherFromTwoThreadsBothComplete()
    {
        using var pool = new WorkerPool(2);
        using var start = new Barrier(2);
        var failures = new List<string>();
        void Jobs(int seed)
        {
            start.SignalAndWait();
            for (int repeat = 0; repeat < 200; repeat++)
            {
                int items = 1 + (seed * 31 + repeat) % 50;
                var range = new CountingJob(items);
                pool.Run(range, items);
                var indices = new int[items];
                pool.Run(items, i => Interlocked.Increment(ref indices[i]));
                if (range.Visits.Any(v => v != 1) || indices.Any(v => v != 1))
                    lock (failures) failures.Add($"thread {seed}, repeat {repeat}");
            }
        }
        var other = new Thread(() => Jobs(1));
        other.Start();
        Jobs(2);
        other.Join();
        Assert.Empty(failures);
    }
}
