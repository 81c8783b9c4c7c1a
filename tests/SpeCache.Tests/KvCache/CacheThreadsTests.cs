using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.Tensors;
using SpeCache.Tests.KvCache.Quantization;
using static SpeCache.Tests.KvCache.Policies.EvictionTestShapes;

namespace SpeCache.Tests.KvCache;

/// <summary>
/// A cache's attention runs on the threads it was made with (an engine's: its backend's pool), as
/// many as those have and no more, and its output does not depend on how many that is.
/// </summary>
public class CacheThreadsTests
{
    /// <summary>A real worker pool that also counts the runs a cache makes and the most indices one asked for.</summary>
    sealed class RecordingThreads(int threads) : IWorkerThreads, IDisposable
    {
        readonly WorkerPool _pool = new(threads);
        public int Runs, MostIndices;

        public int ThreadCount => _pool.ThreadCount;

        public void Run(int count, Action<int> body)
        {
            Runs++;
            MostIndices = Math.Max(MostIndices, count);
            _pool.Run(count, body);
        }

        public void Dispose() => _pool.Dispose();
    }

    [Theory]
    [InlineData("full")]
    [InlineData("kivi:bits=2")]
    [InlineData("specache:bits=1,group=64")]
    [InlineData("specache:bits=2,spec=off")]
    public void AttentionSpreadsOverTheGivenThreadsAndAgreesForEveryCount(string policy)
    {
        // Four KV heads and 1,100 positions: past every policy's threshold for spreading heads.
        var c = Shape(kvHeads: 4, group: 2, headDim: 64) with { ContextLength = 2048 };
        float[]? expected = null;
        foreach (int threads in new[] { 1, 2, 3 })
        {
            using var recorder = new RecordingThreads(threads);
            using var cache = KvCacheFactory.Create(PolicySpec.Parse(policy), c, 1400, recorder);
            var output = Drive(cache, c, new Random(5));
            if (threads == 1)
            {
                Assert.Equal(0, recorder.Runs);
                expected = output;
            }
            else
            {
                Assert.True(recorder.Runs > 0, $"{policy} never spread its attention over {threads} threads");
                Assert.InRange(recorder.MostIndices, 2, threads);
                Assert.True(expected.AsSpan().SequenceEqual(output), $"{policy} on {threads} threads differs from one thread");
            }
        }
    }

    /// <summary>Prefill chunks to 1,100 positions, then four decode steps (with the speculative row where the policy has one); returns every output row.</summary>
    static float[] Drive(IKvCache cache, SpeCache.Transformer.ModelConfig c, Random rng)
    {
        var outputs = new List<float>();
        int spec = cache.SpeculativeRows;
        foreach (int n in new[] { 512, 512, 76, 1, 1, 1, 1 })
        {
            int rows = n == 1 ? 1 + spec : n;
            var k = KiviTestData.Normals(rng, rows, c.KvDim);
            var v = KiviTestData.Normals(rng, rows, c.KvDim);
            var q = KiviTestData.Normals(rng, rows, c.QDim);
            var o = new float[rows * c.QDim];
            cache.BeginStep(rows, n == 1 ? spec : 0);
            cache.Append(0, k, v, rows);
            cache.Attend(0, q, o, rows);
            cache.Commit(n);
            outputs.AddRange(o);
        }
        return [.. outputs];
    }
}
