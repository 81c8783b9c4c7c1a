using SpeCache.Tensors;

namespace SpeCache.Tests.Tensors;

public class ParallelWorkersTests
{
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
    public void NestedRunsOnOtherInstancesComplete()
    {
        // Sequences attend in parallel and each cache splits its heads again, from pool threads.
        var outer = new ParallelWorkers(16);
        var inner = Enumerable.Range(0, 16).Select(_ => new ParallelWorkers()).ToArray();
        var sums = new int[16];
        outer.Run(16, s => inner[s].Run(8, h => Interlocked.Add(ref sums[s], h + 1)));
        Assert.All(sums, sum => Assert.Equal(36, sum));
    }

    [Fact]
    public void NoMoreThanItsThreadCountRunAtOnce()
    {
        var workers = new ParallelWorkers(2);
        int running = 0, most = 0;
        workers.Run(12, _ =>
        {
            int now = Interlocked.Increment(ref running);
            int seen;
            while ((seen = Volatile.Read(ref most)) < now && Interlocked.CompareExchange(ref most, now, seen) != seen) { }
            Thread.Sleep(5);
            Interlocked.Decrement(ref running);
        });
        Assert.InRange(most, 1, 2);
    }

    [Fact]
    public void ThreadCountIsWhatItWasGivenOrOnePerProcessor()
    {
        Assert.Equal(3, new ParallelWorkers(3).ThreadCount);
        Assert.Equal(Environment.ProcessorCount, new ParallelWorkers().ThreadCount);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ParallelWorkers(-1));
    }
}
