using SpeCache.Tensors;

namespace SpeCache.Tests.Tensors;

public class ParallelWorkersTests
{
    [Fact]
    public void EveryIndexRunsExactlyOnceRunAfterRun()
    {
        var workers = new ParallelWorkers();
        foreach (int count in new[] { 0, 1, 2, 3, 7, 64, 2, 1, 33 })
        {
            for (int repeat = 0; repeat < 50; repeat++)
            {
                var runs = new int[count];
                workers.Run(count, i => Interlocked.Increment(ref runs[i]));
                Assert.All(runs, r => Assert.Equal(1, r));
            }
        }
    }

    [Fact]
    public void RunReturnsOnlyWhenEveryIndexHasFinished()
    {
        var workers = new ParallelWorkers();
        int finished = 0;
        workers.Run(8, i =>
        {
            Thread.Sleep(i % 3 * 5);
            Interlocked.Increment(ref finished);
        });
        Assert.Equal(8, Volatile.Read(ref finished));
    }

    [Fact]
    public void AFailureIsRethrownAfterTheOtherIndicesFinish()
    {
        var workers = new ParallelWorkers();
        int finished = 0;
        var e = Assert.Throws<InvalidOperationException>(() => workers.Run(6, i =>
        {
            if (i == 2) throw new InvalidOperationException("index 2 failed");
            Thread.Sleep(10);
            Interlocked.Increment(ref finished);
        }));
        Assert.Equal("index 2 failed", e.Message);
        Assert.Equal(5, Volatile.Read(ref finished));
        // The instance is usable again after a failure.
        int total = 0;
        workers.Run(4, i => Interlocked.Add(ref total, i));
        Assert.Equal(6, total);
    }

    [Fact]
    public void NestedRunsOnOtherInstancesComplete()
    {
        // Sequences attend in parallel and each cache splits its heads again, from pool threads.
        var outer = new ParallelWorkers();
        var inner = Enumerable.Range(0, 16).Select(_ => new ParallelWorkers()).ToArray();
        var sums = new int[16];
        outer.Run(16, s => inner[s].Run(8, h => Interlocked.Add(ref sums[s], h + 1)), maxThreads: 16);
        Assert.All(sums, sum => Assert.Equal(36, sum));
    }

    [Fact]
    public void NoMoreThanMaxThreadsRunAtOnce()
    {
        var workers = new ParallelWorkers();
        int running = 0, most = 0;
        workers.Run(12, _ =>
        {
            int now = Interlocked.Increment(ref running);
            int seen;
            while ((seen = Volatile.Read(ref most)) < now && Interlocked.CompareExchange(ref most, now, seen) != seen) { }
            Thread.Sleep(5);
            Interlocked.Decrement(ref running);
        }, maxThreads: 2);
        Assert.InRange(most, 1, 2);
    }

    [Fact]
    public void ARunInsideARunOfTheSameInstanceRunsOnItsCaller()
    {
        var workers = new ParallelWorkers(2);
        var sums = new int[6];
        var innerThreadsMatch = new bool[6];
        workers.Run(6, s =>
        {
            int thread = Environment.CurrentManagedThreadId;
            bool same = true;
            workers.Run(8, h =>
            {
                same &= Environment.CurrentManagedThreadId == thread;
                Interlocked.Add(ref sums[s], h + 1);
            });
            innerThreadsMatch[s] = same;
        });
        Assert.All(sums, sum => Assert.Equal(36, sum));
        Assert.All(innerThreadsMatch, Assert.True);
    }

    [Fact]
    public void ThreadCountIsWhatItWasGivenOrOnePerProcessor()
    {
        Assert.Equal(3, new ParallelWorkers(3).ThreadCount);
        Assert.Equal(Environment.ProcessorCount, new ParallelWorkers().ThreadCount);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ParallelWorkers(-1));
    }
}
