using SpeCache.KvCache.Policies.Full;
using SpeCache.Tensors;
using SpeCache.Tests.KvCache.Quantization;
using static SpeCache.Tests.KvCache.Policies.EvictionTestShapes;

namespace SpeCache.Tests.KvCache.Policies;

/// <summary>The full cache's threaded attention: the output must not depend on the thread count.</summary>
public class FullKvCacheThreadsTests
{
    public static TheoryData<FullKvElement> Elements => new(FullKvElement.F16, FullKvElement.F32, FullKvElement.Q8_0);

    /// <summary>
    /// One cache per thread count (1 to 5, over 4 KV heads: fewer, as many and more threads than
    /// heads, and 3, which splits the heads unevenly), on an engine's worker pool and on the .NET
    /// thread pool, sees the same prefill chunks and single tokens; past
    /// <see cref="FullKvCache.ParallelFromPositions"/> the threaded ones split the decoding and the
    /// heads, and every output must equal the one-thread output bit for bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Elements))]
    public void OutputIsBitIdenticalForEveryThreadCount(FullKvElement element)
    {
        var c = Shape(kvHeads: 4, group: 2, headDim: 32) with { ContextLength = 2048 };
        int[] threads = [1, 2, 3, 4, 5];
        var pools = threads.Select(t => new WorkerPool(t)).ToArray();
        var caches = threads.Select(t => new FullKvCache(c, 1400, element, new ParallelWorkers(t)))
            .Concat(pools.Select(pool => new FullKvCache(c, 1400, element, pool))).ToArray();
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
            foreach (var pool in pools) pool.Dispose();
        }
    }
}

/// <summary>The decode step's tiled attention (one or two query rows) against the prefill path (the whole cache decoded up front, then <see cref="SpeCache.KvCache.CausalAttention"/>).</summary>
public class FullKvCacheTiledAttentionTests
{
    /// <summary>Element types and thread counts, on GQA groups of 3 (one head at a time), 4 and 5 (four heads at a time, plus one) and heads of 64 and 80.</summary>
    public static TheoryData<FullKvElement, int, int, int> Cases => new()
    {
        { FullKvElement.F16, 1, 3, 64 }, { FullKvElement.F16, 3, 4, 64 }, { FullKvElement.BF16, 2, 3, 64 },
        { FullKvElement.Q8_0, 1, 5, 64 }, { FullKvElement.Q4_0, 2, 3, 64 }, { FullKvElement.F32, 1, 4, 64 },
        { FullKvElement.F16, 2, 5, 80 }, { FullKvElement.Q8_0, 1, 4, 96 },
    };

    /// <summary>
    /// Two caches hold the same tokens. One attends the last three rows in one call (more than
    /// <see cref="FullKvCache.TiledFromRowsAtMost"/>: every row decoded up front, a block of rows
    /// at a time with an online softmax); the other takes the first of them with its own call and
    /// the last two together (decode calls, tiled, two-pass softmax). Both decode the same floats,
    /// so each row's outputs must agree to float rounding, at contexts that end inside a tile and on
    /// its edge.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void DecodeStepsAgreeWithThePrefillPath(FullKvElement element, int threads, int group, int headDim)
    {
        var c = Shape(kvHeads: 2, group: group, headDim: headDim) with { ContextLength = 1024 };
        var rng = new Random(23);
        foreach (int prefix in new[] { 1, 61, 126, 300 })
        {
            using var upFront = new FullKvCache(c, 512, element, new ParallelWorkers(threads));
            using var tiled = new FullKvCache(c, 512, element, new ParallelWorkers(threads));
            var k = KiviTestData.Normals(rng, prefix + 3, c.KvDim);
            var v = KiviTestData.Normals(rng, prefix + 3, c.KvDim);
            var q = KiviTestData.Normals(rng, prefix + 3, c.QDim);
            foreach (var cache in new[] { upFront, tiled })
            {
                cache.Append(0, k.AsSpan(0, prefix * c.KvDim), v.AsSpan(0, prefix * c.KvDim), prefix);
                cache.Attend(0, q.AsSpan(0, prefix * c.QDim), new float[prefix * c.QDim], prefix);
                cache.Commit(prefix);
            }
            var expected = new float[3 * c.QDim];
            upFront.Append(0, k.AsSpan(prefix * c.KvDim), v.AsSpan(prefix * c.KvDim), 3);
            upFront.Attend(0, q.AsSpan(prefix * c.QDim), expected, 3);

            var actual = new float[3 * c.QDim];
            tiled.Append(0, k.AsSpan(prefix * c.KvDim, c.KvDim), v.AsSpan(prefix * c.KvDim, c.KvDim), 1);
            tiled.Attend(0, q.AsSpan(prefix * c.QDim, c.QDim), actual.AsSpan(0, c.QDim), 1);
            tiled.Commit(1);
            tiled.Append(0, k.AsSpan((prefix + 1) * c.KvDim), v.AsSpan((prefix + 1) * c.KvDim), 2);
            tiled.Attend(0, q.AsSpan((prefix + 1) * c.QDim), actual.AsSpan(c.QDim), 2);
            for (int i = 0; i < actual.Length; i++)
                Assert.True(Math.Abs(actual[i] - expected[i]) <= 1e-5f * (1 + Math.Abs(expected[i])),
                    $"{element}, {threads} threads, context {prefix}: value {i} of the tiled decode is {actual[i]}, the prefill path's {expected[i]}");
        }
    }

    /// <summary>
    /// An F16 cache's decode step reads halves in place only while they are all finite and the
    /// queries small enough to scale: a value that overflows to an infinite half, a key of the
    /// largest finite half, and a query of 10^5 must each give what the prefill path (the exact
    /// conversion, no scaling) gives, infinities and NaNs in the same places.
    /// </summary>
    [Theory]
    [InlineData("infinite value")]
    [InlineData("largest finite key")]
    [InlineData("huge query")]
    public void HalvesOutOfTheScaledRangeGiveTheExactResult(string what)
    {
        var c = Shape(kvHeads: 2, group: 4, headDim: 64) with { ContextLength = 512 };
        var rng = new Random(29);
        const int prefix = 100;
        var k = KiviTestData.Normals(rng, prefix + 1, c.KvDim);
        var v = KiviTestData.Normals(rng, prefix + 1, c.KvDim);
        var q = KiviTestData.Normals(rng, prefix + 1, c.QDim);
        switch (what)
        {
            case "infinite value": v[37 * c.KvDim + 5] = 70000f; break; // past 65504: an infinite half
            case "largest finite key": k[37 * c.KvDim + 5] = 65504f; break;
            case "huge query": q[prefix * c.QDim + 70] = 1e5f; break;
        }
        // The decode step after the prefix, against all the rows in one call (more than two: the prefill path).
        using var tiled = new FullKvCache(c, 256, FullKvElement.F16, new ParallelWorkers(1));
        tiled.Append(0, k.AsSpan(0, prefix * c.KvDim), v.AsSpan(0, prefix * c.KvDim), prefix);
        tiled.Attend(0, q.AsSpan(0, prefix * c.QDim), new float[prefix * c.QDim], prefix);
        tiled.Commit(prefix);
        var actual = new float[c.QDim];
        tiled.Append(0, k.AsSpan(prefix * c.KvDim), v.AsSpan(prefix * c.KvDim), 1);
        tiled.Attend(0, q.AsSpan(prefix * c.QDim), actual, 1);
        using var reference = new FullKvCache(c, 256, FullKvElement.F16, new ParallelWorkers(1));
        reference.Append(0, k, v, prefix + 1);
        var all = new float[(prefix + 1) * c.QDim];
        reference.Attend(0, q, all, prefix + 1);
        var wanted = all.AsSpan(prefix * c.QDim);
        int special = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!float.IsFinite(wanted[i])) special++;
            bool same = float.IsNaN(wanted[i]) ? float.IsNaN(actual[i])
                : float.IsInfinity(wanted[i]) ? actual[i] == wanted[i]
                : Math.Abs(actual[i] - wanted[i]) <= 1e-5f * (1 + Math.Abs(wanted[i]));
            Assert.True(same, $"{what}: output {i} of the decode step is {actual[i]}, the prefill path's {wanted[i]}");
        }
        if (what == "infinite value") Assert.True(special > 0, "the infinite value reached no output");
    }
}