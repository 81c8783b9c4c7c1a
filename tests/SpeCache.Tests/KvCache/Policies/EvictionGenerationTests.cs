using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.KvCache.Policies.H2o;
using SpeCache.KvCache.Policies.Streaming;
using static SpeCache.Tests.KvCache.Policies.EvictionTestShapes;

namespace SpeCache.Tests.KvCache.Policies;

/// <summary>The eviction policies inside the real forward pass of tinystories-656k.</summary>
public class EvictionGenerationTests
{
    /// <summary>Kept tokens cover the whole context: nothing is evicted, so the text is full's, token for token.</summary>
    [Theory]
    [InlineData("streaming")]
    [InlineData("h2o")]
    public void WithAWindowCoveringTheContextGreedyTextEqualsFull(string policy)
    {
        var (file, model, backend) = TinyStories();
        using var _ = file;
        using var __ = backend;
        var prompt = StoryPrompt(model);
        using var full = new FullKvCache(model.Config, 512);
        using IKvCache cache = policy == "streaming"
            ? new StreamingKvCache(model.Config, 512, new StreamingOptions(Sinks: 4, Window: 508))
            : new H2oKvCache(model.Config, 512, new H2oOptions(Window: 256, HeavyHitters: 256));
        int[] expected = Greedy(model, full, prompt, 400);
        int[] actual = Greedy(model, cache, prompt, 400);
        Assert.Equal(expected, actual);
    }

    /// <summary>
    /// A 32-token budget against a 100-token prompt and 300 more: generation runs through
    /// prefill chunks longer than the window and hundreds of evictions; the cache never holds
    /// more than its kept tokens, and the text is the model's own (valid ids, not one token repeated).
    /// </summary>
    [Theory]
    [InlineData("streaming")]
    [InlineData("h2o")]
    public void WithASmallWindowGenerationRunsInBoundedMemory(string policy)
    {
        var (file, model, backend) = TinyStories();
        using var _ = file;
        using var __ = backend;
        var prompt = StoryPrompt(model);
        using var full = new FullKvCache(model.Config, 512);
        using var cache = (SpeCache.KvCache.Policies.Eviction.SlotKvCache)(policy == "streaming"
            ? new StreamingKvCache(model.Config, 512, new StreamingOptions(Sinks: 4, Window: 28))
            : new H2oKvCache(model.Config, 512, new H2oOptions(Window: 16, HeavyHitters: 16)));
        int[] expected = Greedy(model, full, prompt, 300);
        int[] actual = Greedy(model, cache, prompt, 300);
        Assert.Equal(prompt.Length + 300 - 1, cache.Length);
        Assert.Equal(32, cache.KeptTokens);
        Assert.All(actual, t => Assert.InRange(t, 0, model.Config.VocabSize - 1));
        Assert.True(actual.Distinct().Count() > 20, $"{policy}: only {actual.Distinct().Count()} distinct tokens");
        int same = 0;
        while (same < actual.Length && actual[same] == expected[same]) same++;
        int agree = 0;
        for (int i = 0; i < actual.Length; i++) if (actual[i] == expected[i]) agree++;
        TestContext.Current.TestOutputHelper?.WriteLine($"{policy}, 32 kept tokens, 100-token prompt: first {same} of 300 greedy tokens equal full's, {agree} agree position by position");
    }
}
