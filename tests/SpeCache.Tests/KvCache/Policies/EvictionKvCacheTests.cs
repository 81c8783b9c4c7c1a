using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Eviction;
using SpeCache.KvCache.Policies.Full;
using SpeCache.KvCache.Policies.H2o;
using SpeCache.KvCache.Policies.Streaming;
using static SpeCache.Tests.KvCache.Policies.EvictionTestShapes;

namespace SpeCache.Tests.KvCache.Policies;

public class EvictionKvCacheTests
{
    static IKvCache Create(string policy, SpeCache.Transformer.ModelConfig c, int capacity, int window, int staging = 64) => policy switch
    {
        "streaming" => new StreamingKvCache(c, capacity, new StreamingOptions(Sinks: 4, Window: window, StagingRows: staging)),
        "h2o" => new H2oKvCache(c, capacity, new H2oOptions(Window: window / 2, HeavyHitters: window - window / 2, StagingRows: staging)),
        _ => throw new ArgumentException(policy),
    };

    /// <summary>
    /// With every token kept, both policies attend exactly like the full cache. The inputs are F16
    /// values, so the F16 slots lose nothing and the comparison can be with full's F32 cache.
    /// </summary>
    [Theory]
    [InlineData("streaming")]
    [InlineData("h2o")]
    public void WithAWindowCoveringTheContextAttendEqualsFullF32(string policy)
    {
        var c = Shape(kvHeads: 2, group: 2, layers: 2);
        const int capacity = 200;
        using var full = new FullKvCache(c, capacity, FullKvElement.F32);
        using var cache = Create(policy, c, capacity, window: capacity);
        var rng = new Random(7);
        int total = 0;
        foreach (int n in new[] { 40, 1, 1, 64, 3, 1, 1, 50, 1 })
        {
            for (int layer = 0; layer < c.LayerCount; layer++)
            {
                var k = HalfExact(rng, n * c.KvDim);
                var v = HalfExact(rng, n * c.KvDim);
                var q = HalfExact(rng, n * c.QDim);
                var expected = new float[n * c.QDim];
                var actual = new float[n * c.QDim];
                full.Append(layer, k, v, n);
                full.Attend(layer, q, expected, n);
                cache.Append(layer, k, v, n);
                cache.Attend(layer, q, actual, n);
                for (int i = 0; i < actual.Length; i++)
                    Assert.True(MathF.Abs(actual[i] - expected[i]) <= 1e-5f, $"{policy}, token {total}, layer {layer}, value {i}: {actual[i]} vs {expected[i]}");
            }
            full.Commit(n);
            cache.Commit(n);
            total += n;
        }
        Assert.Equal(total, cache.Length);
    }

    /// <summary>
    /// Zero keys make attention uniform over whatever is visible and one-hot values make each
    /// token's share show up in its own output channel, so the output lists exactly the tokens
    /// the cache holds: the sinks, the last W committed tokens, and the call's own rows.
    /// </summary>
    [Fact]
    public void StreamingKeepsExactlyTheSinksAndTheLastWindow()
    {
        const int sinks = 4, window = 8, headDim = 64;
        var c = Shape(kvHeads: 1, group: 1, headDim: headDim);
        using var cache = new StreamingKvCache(c, 64, new StreamingOptions(sinks, window, StagingRows: 32));
        var q = new float[32 * headDim];
        var output = new float[32 * headDim];
        int position = 0;
        // A 20-token prompt (longer than sinks + window), then single tokens.
        foreach (int n in new[] { 20 }.Concat(Enumerable.Repeat(1, 40)))
        {
            var k = new float[n * headDim];
            var v = new float[n * headDim];
            for (int t = 0; t < n; t++) v[t * headDim + position + t] = 1;
            cache.Append(0, k, v, n);
            cache.Attend(0, q.AsSpan(0, n * headDim), output.AsSpan(0, n * headDim), n);
            for (int i = 0; i < n; i++)
            {
                var seen = new HashSet<int>();
                // Kept from earlier calls: the sinks and the W newest before this call.
                for (int p = 0; p < position; p++)
                    if (p < sinks || p >= position - window) seen.Add(p);
                for (int r = 0; r <= i; r++) seen.Add(position + r);
                var row = output.AsSpan(i * headDim, headDim);
                for (int p = 0; p < headDim; p++)
                {
                    float expected = seen.Contains(p) ? 1f / seen.Count : 0f;
                    Assert.True(MathF.Abs(row[p] - expected) < 1e-6f, $"row at position {position + i}: token {p} has weight {row[p]}, expected {expected}");
                }
            }
            cache.Commit(n);
            position += n;
            Assert.Equal(Math.Min(position, sinks + window), cache.KeptTokens);
        }
    }

    /// <summary>
    /// Every query points along channel 0; token 5's key points along it hard (a heavy hitter) and
    /// token 1's key points away (almost no attention), all others are zero. With a window of 4
    /// and 4 heavy-hitter slots, token 5 must survive 60 tokens and token 1 must be evicted even
    /// though, being older, the other light tokens have accumulated more than it.
    /// </summary>
    [Fact]
    public void H2oKeepsTheHeavyHitterAndEvictsTheLightToken()
    {
        const int headDim = 64, window = 4, heavy = 4;
        var c = Shape(kvHeads: 2, group: 2, headDim: headDim);
        using var cache = new H2oKvCache(c, 100, new H2oOptions(window, heavy, StagingRows: 16));
        var q = new float[16 * c.QDim];
        var output = new float[16 * c.QDim];
        int position = 0;
        foreach (int n in new[] { 10 }.Concat(Enumerable.Repeat(1, 50)))
        {
            var k = new float[n * c.KvDim];
            var v = new float[n * c.KvDim];
            for (int t = 0; t < n; t++)
                for (int h = 0; h < c.KvHeadCount; h++)
                {
                    int p = position + t;
                    v[t * c.KvDim + h * headDim + p] = 1;
                    if (p == 5) k[t * c.KvDim + h * headDim] = 40;
                    if (p == 1) k[t * c.KvDim + h * headDim] = -40;
                }
            for (int i = 0; i < n * c.HeadCount; i++) q[i * headDim] = 1;
            cache.Append(0, k, v, n);
            cache.Attend(0, q.AsSpan(0, n * c.QDim), output.AsSpan(0, n * c.QDim), n);
            cache.Commit(n);
            position += n;
        }
        Assert.Equal(window, cache.Window);
        Assert.Equal(heavy, cache.HeavyHitters);
        for (int h = 0; h < c.KvHeadCount; h++)
        {
            var kept = cache.KeptPositions(0, h);
            Assert.Equal(window + heavy, kept.Length);
            Assert.Contains(5, kept);
            Assert.DoesNotContain(1, kept);
            for (int p = position - window; p < position; p++) Assert.Contains(p, kept);
        }
        // The last row's output: token 5 dominates it, token 1 is gone from it.
        var last = output.AsSpan(0, headDim);
        Assert.True(last[5] > 0.9f, $"heavy hitter's weight {last[5]}");
        Assert.Equal(0f, last[1]);
    }

    [Fact]
    public void StreamingSizesItsWindowToTheBudget()
    {
        var c = Shape(kvHeads: 2, group: 2, headDim: 64, layers: 3);
        long slot = SlotKvCache.SlotBytes(c);
        Assert.Equal(2L * 3 * 128 * 2, slot);
        long budget = slot * (4 + 100 + 64) + slot - 1;
        using var cache = (StreamingKvCache)KvCacheFactory.Create(
            new KvCacheOptions { Policy = "streaming", FastTierBudgetBytes = budget, Streaming = new StreamingOptions(Sinks: 4, Window: 9) }, c, 512);
        Assert.Equal(4, cache.Sinks);
        Assert.Equal(100, cache.Window);
        Assert.Equal(slot * (4 + 100 + 64), cache.Memory.FastTierBytes);
        Assert.True(cache.Memory.FastTierBytes <= budget);
        Assert.Equal(slot, KvCacheFactory.FastTierBytesPerToken(new KvCacheOptions { Policy = "streaming" }, c));
    }

    [Fact]
    public void H2oSizesItsSlotsToTheBudgetIncludingItsScores()
    {
        var c = Shape(kvHeads: 2, group: 2, headDim: 64, layers: 3);
        long slot = H2oKvCache.SlotBytesWithScores(c);
        Assert.Equal(2L * 3 * 128 * 2 + 3 * 2 * 8, slot);
        long budget = slot * (50 + 64);
        using var cache = (H2oKvCache)KvCacheFactory.Create(new KvCacheOptions { Policy = "h2o", FastTierBudgetBytes = budget }, c, 512);
        Assert.Equal(50, cache.KeptSlots);
        Assert.Equal(25, cache.Window);
        Assert.Equal(25, cache.HeavyHitters);
        Assert.Equal(budget, cache.Memory.FastTierBytes);
    }

    [Fact]
    public void ABudgetLargerThanTheContextKeepsOnlyTheContext()
    {
        var c = Shape(kvHeads: 1, group: 1);
        using var cache = new StreamingKvCache(c, 100, new StreamingOptions(), budgetBytes: 1L << 30);
        Assert.Equal(100, cache.KeptSlots);
        Assert.Equal(64, cache.StagingRows);
        Assert.Equal((100 + 64) * SlotKvCache.SlotBytes(c), cache.Memory.FastTierBytes);
    }

    [Theory]
    [InlineData("streaming", "streaming needs 69 (4 sinks, 1 recent, 64 staging rows)")]
    [InlineData("h2o", "h2o needs 66 (2 kept, 64 staging rows)")]
    public void ABudgetTooSmallFailsAtCreationInOneLine(string policy, string message)
    {
        var c = Shape(kvHeads: 2, group: 2);
        var e = Assert.Throws<ArgumentException>(() => KvCacheFactory.Create(new KvCacheOptions { Policy = policy, FastTierBudgetBytes = 60 * SlotKvCache.SlotBytes(c) }, c, 512));
        Assert.Contains(message, e.Message);
        Assert.StartsWith("a KV budget of ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void AFullCacheOverTheBudgetFailsAtCreation()
    {
        var c = Shape(kvHeads: 2, group: 2, layers: 2);
        long bytes = 2L * 2 * 100 * c.KvDim * sizeof(ushort);
        using var fits = KvCacheFactory.Create(new KvCacheOptions { FastTierBudgetBytes = bytes }, c, 100);
        Assert.Equal(bytes, fits.Memory.FastTierBytes);
        var e = Assert.Throws<ArgumentException>(() => KvCacheFactory.Create(new KvCacheOptions { FastTierBudgetBytes = bytes - 1 }, c, 100));
        Assert.StartsWith("the full KV cache needs ", e.Message);
        Assert.Contains("for a context of 100 tokens, more than the budget of", e.Message);
    }

    [Theory]
    [InlineData("streaming")]
    [InlineData("h2o")]
    public void CommittingFewerRowsThanAppendedIsAnError(string policy)
    {
        var c = Shape(kvHeads: 1, group: 1);
        using var cache = Create(policy, c, 64, window: 8);
        cache.Append(0, new float[2 * 64], new float[2 * 64], 2);
        Assert.Throws<InvalidOperationException>(() => cache.Commit(1));
        Assert.Throws<NotSupportedException>(() => cache.BeginStep(2, 1));
    }

    [Fact]
    public void MoreRowsThanTheStagingInOneCallIsAClearError()
    {
        var c = Shape(kvHeads: 1, group: 1);
        using var cache = Create("streaming", c, 64, window: 8, staging: 4);
        var e = Assert.Throws<InvalidOperationException>(() => cache.Append(0, new float[5 * 64], new float[5 * 64], 5));
        Assert.Contains("exceed the 4 staging rows", e.Message);
    }
}
