using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.Tests.KvCache.Quantization;
using SpeCache.Transformer;
using static SpeCache.Tests.KvCache.Policies.EvictionTestShapes;

namespace SpeCache.Tests.Transformer;

/// <summary>When a batch's attention spreads over the threads by whole sequences, and when its sequences run one after another, each cache spreading its own heads.</summary>
public class SequenceAttentionTests
{
    static readonly ModelConfig Config = Shape(kvHeads: 2, group: 2, headDim: 32) with { ContextLength = 1024 };

    static FullKvCache CacheOf(int length)
    {
        var cache = new FullKvCache(Config, 1024, FullKvElement.F32);
        if (length == 0) return cache;
        var rng = new Random(length);
        cache.Append(0, KiviTestData.Normals(rng, length, Config.KvDim), KiviTestData.Normals(rng, length, Config.KvDim), length);
        cache.Commit(length);
        return cache;
    }

    [Fact]
    public void DecodeStepsOfEqualContextsShareOutWhenThereAreEnoughOfThem()
    {
        using var a = CacheOf(500);
        using var b = CacheOf(500);
        using var d = CacheOf(500);
        SequenceRows[] two = [new(a, 2, 1, 2), new(b, 2, 1, 2)];
        Assert.True(SequenceAttention.SequencesShareOut(two, threads: 2));
        Assert.False(SequenceAttention.SequencesShareOut(two, threads: 3)); // fewer sequences than threads
        Assert.True(SequenceAttention.SequencesShareOut([.. two, new(d, 2, 1, 2)], threads: 3));
        Assert.False(SequenceAttention.SequencesShareOut([new(a, 1)], threads: 1)); // a lone sequence runs on the caller
        Assert.False(SequenceAttention.SequencesShareOut(two, threads: 1)); // one thread: nothing to spread over
    }

    [Fact]
    public void ASequenceThatOutweighsAThreadsShareKeepsTheBatchOnTheCaller()
    {
        using var deep = CacheOf(900);
        using var shallow = CacheOf(10);
        using var joining = CacheOf(0);
        using var half = CacheOf(450);
        // Two decode steps, one 90 times as deep: whole sequences would leave one thread idle.
        Assert.False(SequenceAttention.SequencesShareOut([new(deep, 1), new(shallow, 1)], threads: 2));
        // A prompt chunk joining three decode steps outweighs the rest.
        Assert.False(SequenceAttention.SequencesShareOut([new(joining, 256), new(deep, 1), new(deep, 1), new(shallow, 1)], threads: 2));
        // Three even decode steps and a fourth half as deep still share out on two threads.
        Assert.True(SequenceAttention.SequencesShareOut([new(deep, 1), new(deep, 1), new(deep, 1), new(half, 1)], threads: 2));
    }
}
