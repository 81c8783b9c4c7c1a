using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.Tests.KvCache.Policies;

namespace SpeCache.Tests.KvCache;

public class KvCacheFactoryTests
{
    // A policy that cannot hold a model's K/V fails in one line before any memory is taken, the same
    // way for sizing (admission) and for creation.
    [Theory]
    [InlineData("kivi:bits=2", "f16", 4, "the kivi cache needs a head size that is a multiple of 8 up to 512 (this model's is 4)")]
    [InlineData("specache:bits=1,group=64", "f16", 12, "the specache cache needs a head size that is a multiple of 8 up to 512 (this model's is 12)")]
    [InlineData("specache:bits=1,group=32", "f16", 40, "the specache cache's value groups of 32 channels do not tile this model's heads of 40")]
    [InlineData("full", "q8_0", 8, "a q8_0 cache needs KV rows of a multiple of 32 values (this model's are 16)")]
    public void APolicyThatCannotHoldTheModelIsOneClearError(string policy, string fullType, int headDim, string message)
    {
        var config = EvictionTestShapes.Shape(kvHeads: 2, group: 2, headDim: headDim, layers: 1);
        var options = PolicySpec.Parse(policy) with { FullElement = Enum.Parse<SpeCache.KvCache.Policies.Full.FullKvElement>(fullType, ignoreCase: true) };
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => KvCacheFactory.FastTierBytes(options, config, 10)).Message);
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => KvCacheFactory.Create(options, config, 10)).Message);
    }

    // Admission decides from FastTierBytes before a cache exists; it must be the bytes the cache then holds.
    [Theory]
    [InlineData("full")]
    [InlineData("full", "q8_0")]
    [InlineData("full", "q4_0")]
    [InlineData("kivi:bits=2,group=32,residual=32")]
    [InlineData("kivi:bits=1,group=64,residual=64")]
    [InlineData("specache:bits=1,group=64,k=16")]
    [InlineData("specache:bits=2,group=32,k=64,residual=32")]
    [InlineData("streaming:sinks=4,window=60")]
    [InlineData("streaming:budget=200KiB")]
    [InlineData("h2o:window=30,heavy=30")]
    [InlineData("h2o:budget=300KiB")]
    public void FastTierBytesIsWhatTheCacheHolds(string policy, string fullType = "f16")
    {
        var config = EvictionTestShapes.Shape(kvHeads: 2, group: 2, headDim: 64, layers: 3);
        var options = PolicySpec.Parse(policy) with { FullElement = Enum.Parse<SpeCache.KvCache.Policies.Full.FullKvElement>(fullType, ignoreCase: true) };
        foreach (int capacity in new[] { 1, 77, 300, 512 })
        {
            using var cache = KvCacheFactory.Create(options, config, capacity);
            Assert.Equal(cache.Memory.FastTierBytes, KvCacheFactory.FastTierBytes(options, config, capacity));
        }
    }
}
