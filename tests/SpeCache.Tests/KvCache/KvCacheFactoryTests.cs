using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.Tests.KvCache.Policies;

namespace SpeCache.Tests.KvCache;

public class KvCacheFactoryTests
{
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
