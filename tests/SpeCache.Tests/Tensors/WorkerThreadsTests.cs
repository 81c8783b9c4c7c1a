using SpeCache.Tensors;

namespace SpeCache.Tests.Tensors;

/// <summary>What <see cref="IWorkerThreads"/> promises, held by both kinds: the engine's worker pool and the .NET thread pool's workers.</summary>
public class WorkerThreadsTests
{
    public static TheoryData<string, int> Kinds => new()
    {
        { "pool", 1 }, { "pool", 2 }, { "pool", 3 },
        { "thread pool", 1 }, { "thread pool", 2 }, { "thread pool", 3 },
    };

    /// <summary>Runs <paramref name="test"/> on threads of the kind, disposing the pool after (the .NET thread pool's need nothing).</summary>
    static void WithThreads(string kind, int count, Action<IWorkerThreads> test)
    {
        IWorkerThreads threads = kind == "pool" ? new WorkerPool(count) : new ParallelWorkers(count);
        try
        {
            test(threads);
        }
        finally
        {
            (threads as IDisposable)?.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void EveryIndexRunsExactlyOnceRunAfterRun(string kind, int count)
    {
        WithThreads(kind, count, threads =>
        {
            Assert.Equal(count, threads.ThreadCount);
            foreach (int n in new[] { 0, 1, 2, 3, 7, 64, 2, 1, 33 })
            {
                for (int repeat = 0; repeat < 50; repeat++)
                {
                    var runs = new int[n];
                    threads.Run(n, i => Interlocked.Increment(ref runs[i]));
                    Assert.All(runs, r => Assert.Equal(1, r));
                }
            }
        });
    }

    /// <summary>
    /// A batch's sequences attend on the engine's threads and each cache splits its heads on the
    /// same threads: a run started inside a run must complete on the thread that started it,
    /// neither deadlocking nor disturbing the outer run's claims.
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void ARunInsideARunCompletesOnItsCallersThread(string kind, int count)
    {
        WithThreads(kind, count, threads =>
        {
            var outer = new int[16];
            var sums = new int[16];
            var innerThreadsMatch = new bool[16];
            threads.Run(16, s =>
            {
                Interlocked.Increment(ref outer[s]);
                int thread = Environment.CurrentManagedThreadId;
                bool same = true;
                threads.Run(8, h =>
                {
                    same &= Environment.CurrentManagedThreadId == thread;
                    Interlocked.Add(ref sums[s], h + 1);
                });
                innerThreadsMatch[s] = same;
            });
            Assert.All(outer, v => Assert.Equal(1, v));
            Assert.All(sums, sum => Assert.Equal(36, sum));
            Assert.All(innerThreadsMatch, Assert.True);
        });
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void AFailureReachesTheCallerAfterTheOtherIndicesFinish(string kind, int count)
    {
        WithThreads(kind, count, threads =>
        {
            int finished = 0;
            var e = Assert.Throws<InvalidOperationException>(() => threads.Run(6, i =>
            {
                if (i == 2) throw new InvalidOperationException("index 2 failed");
                Thread.Sleep(5);
                Interlocked.Increment(ref finished);
            }));
            Assert.Equal("index 2 failed", e.Message);
            Assert.Equal(5, Volatile.Read(ref finished));
            // Usable again after a failure.
            int total = 0;
            threads.Run(4, i => Interlocked.Add(ref total, i));
            Assert.Equal(6, total);
        });
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void EveryIndexRunsEvenWhenEveryOneFails(string kind, int count)
    {
        WithThreads(kind, count, threads =>
        {
            var runs = new int[12];
            Assert.Throws<InvalidOperationException>(() => threads.Run(12, i =>
            {
                Interlocked.Increment(ref runs[i]);
                throw new InvalidOperationException($"index {i} failed");
            }));
            Assert.All(runs, r => Assert.Equal(1, r));
        });
    }
}
