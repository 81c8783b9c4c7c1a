using SpeCache.KvCache.Policies.Full;
using SpeCache.Tests.KvCache.Quantization;
using static SpeCache.Tests.KvCache.Policies.EvictionTestShapes;

namespace SpeCache.Tests.KvCache.Policies;

/// <summary>The full cache's threaded attention: the output must not depend on the thread count.</summary>
public class FullKvCacheThreadsTests
{
    public static TheoryData<FullKvElement> Elements => new(FullKvElement.F16, FullKvElement.F32, FullKvElement.Q8_0);

    /// <summary>
    /// One cache per thread count (1 to 5, over 4 KV heads: fewer, as many and more threads than
    /// heads, and 3, which splits the heads unevenly) sees the same prefill chunks and single
    /// tokens; past <see cref="FullKvCache.ParallelFromPositions"/> the threaded ones split the
    /// decoding and the heads, and every output must equal the one-thread output bit for bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Elements))]
    public void OutputIsBitIdenticalForEveryThreadCount(FullKvElement element)
    {
        var c = Shape(kvHeads: 4, group: 2, headDim: 32) with { ContextLength = 2048 };
        int[] threads = [1, 2, 3, 4, 5];
        var caches = threads.Select(t => new FullKvCache(c, 1400, element, t)).ToArray();
        try
        {
            var rng = new Random(17);
            int length = 0;
            // The first chunk stays below the threshold, the second crosses it, the rest are beyond.
            foreach (int n in new[] { 600, 500, 1, 64, 1, 1 })
            {
                var k = KiviTestData.Normals(rng, n, c.KvDim);
                var v = KiviTestData.Normals(rng, n, c.KvDim);
                var q = KiviTestData.Normals(rng, n, c.QDim);
                float[]? expected = null;
                foreach (var cache in caches)
                {
                    var o = new float[n * c.QDim];
                    cache.Append(0, k, v, n);
                    cache.Attend(0, q, o, n);
                    cache.Commit(n);
                    expected ??= o;
                    Assert.True(expected.AsSpan().SequenceEqual(o), $"{element}: {n} rows at length {length} differ from one thread");
                }
                length += n;
            }
            Assert.True((long)length * c.KvHeadCount >= FullKvCache.ParallelFromPositions, "the threaded path was not reached");
        }
        finally
        {
            foreach (var cache in caches) cache.Dispose();
        }
    }
}
