using SpeCache.Generation;

namespace SpeCache.Tests.Generation;

public class SamplerTests
{
    static float[] RandomLogits(int n, int seed)
    {
        var rng = new Random(seed);
        var logits = new float[n];
        for (int i = 0; i < n; i++)
            logits[i] = (float)(rng.NextDouble() * 10 - 5);
        return logits;
    }

    static int ArgMax(float[] x) => Array.IndexOf(x, x.Max());

    [Fact]
    public void GreedyPicksArgmax()
    {
        var sampler = new Sampler(SamplingOptions.Greedy, 1000);
        for (int seed = 0; seed < 20; seed++)
        {
            var logits = RandomLogits(1000, seed);
            Assert.Equal(ArgMax(logits), sampler.Sample(logits, []));
        }
    }

    [Fact]
    public void TopKOneEqualsGreedy()
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = 1.5f, TopK = 1, TopP = 1, MinP = 0, Seed = 7 }, 500);
        for (int seed = 0; seed < 50; seed++)
        {
            var logits = RandomLogits(500, seed);
            Assert.Equal(ArgMax(logits), sampler.Sample(logits, []));
        }
    }

    static int[] Draws(SamplingOptions options, float[] logits, int count)
    {
        var sampler = new Sampler(options, logits.Length);
        var result = new int[count];
        for (int i = 0; i < count; i++)
            result[i] = sampler.Sample(logits, []);
        return result;
    }

    [Fact]
    public void SameSeedSameTokensDifferentSeedDifferentTokens()
    {
        var logits = RandomLogits(100, 1);
        var options = new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = 42 };
        var a = Draws(options, logits, 500);
        var b = Draws(options, logits, 500);
        var c = Draws(options with { Seed = 43 }, logits, 500);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.True(a.Distinct().Count() > 10, "a flat-ish distribution should give many different tokens");
    }

    [Fact]
    public void SeedIsReportedWhenChosenAtRandom()
    {
        var sampler = new Sampler(new SamplingOptions(), 10);
        var replay = new Sampler(new SamplingOptions { Seed = sampler.Seed }, 10);
        var logits = RandomLogits(10, 3);
        for (int i = 0; i < 100; i++)
            Assert.Equal(sampler.Sample(logits, []), replay.Sample(logits, []));
    }

    [Fact]
    public void DrawsFollowTheDistribution()
    {
        // Two tokens with probabilities 0.75 / 0.25 at temperature 1.
        float[] logits = [MathF.Log(3), 0];
        var draws = Draws(new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = 5 }, logits, 20000);
        double share = draws.Count(t => t == 0) / 20000.0;
        Assert.InRange(share, 0.73, 0.77);
    }

    [Fact]
    public void TopPExcludesTheTail()
    {
        // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps exactly the first two (0.5 falls short, 0.5 + 0.3 reaches it).
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f)];
        var draws = Draws(new SamplingOptions { Temperature = 1, TopK = 0, TopP = 0.75f, MinP = 0, Seed = 11 }, logits, 5000);
        Assert.DoesNotContain(2, draws);
        Assert.DoesNotContain(3, draws);
        Assert.Contains(0, draws);
        Assert.Contains(1, draws);
    }

    [Fact]
    public void MinPExcludesUnlikelyTokens()
    {
        // min_p 0.2 with p_max 0.5: the threshold is 0.1, so the 0.05 token goes and 0.15 stays.
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f)];
        var draws = Draws(new SamplingOptions { Temperature = 2, TopK = 0, TopP = 1, MinP = 0.2f, Seed = 13 }, logits, 5000);
        Assert.DoesNotContain(3, draws);
        Assert.Contains(2, draws);
    }

    [Fact]
    public void TopKExcludesAllButK()
    {
        var logits = RandomLogits(1000, 9);
        var top3 = logits.Select((v, i) => (v, i)).OrderByDescending(x => x.v).Take(3).Select(x => x.i).ToHashSet();
        var draws = Draws(new SamplingOptions { Temperature = 5, TopK = 3, TopP = 1, MinP = 0, Seed = 17 }, logits, 3000);
        Assert.All(draws, t => Assert.Contains(t, top3));
        Assert.Equal(3, draws.Distinct().Count());
    }

    [Fact]
    public void RepetitionPenaltyChangesTheArgmax()
    {
        // Token 0 leads (2.0 vs 1.5) but was just generated: 2.0 / 1.5 = 1.33 < 1.5, so token 1 wins.
        float[] logits = [2.0f, 1.5f, -1.0f];
        var sampler = new Sampler(SamplingOptions.Greedy with { RepetitionPenalty = 1.5f }, 3);
        Assert.Equal(1, sampler.Sample(logits, [0]));
        Assert.Equal(0, sampler.Sample(logits, [2]));
        // Outside the window the token is not penalised.
        var windowed = new Sampler(SamplingOptions.Greedy with { RepetitionPenalty = 1.5f, RepetitionLastN = 1 }, 3);
        Assert.Equal(0, windowed.Sample(logits, [0, 2]));
    }

    [Fact]
    public void RepetitionPenaltyMultipliesNegativeLogits()
    {
        // Both negative: -1.0 leads -1.2, but -1.0 * 1.5 = -1.5 falls below -1.2 once penalised.
        float[] logits = [-1.0f, -1.2f];
        var sampler = new Sampler(SamplingOptions.Greedy with { RepetitionPenalty = 1.5f }, 2);
        Assert.Equal(1, sampler.Sample(logits, [0, 0, 0]));
    }

    [Theory]
    [InlineData(-0.1f, 40, 0.9f, 0.05f, 1.0f, "Temperature")]
    [InlineData(0.8f, -1, 0.9f, 0.05f, 1.0f, "TopK")]
    [InlineData(0.8f, 40, 0f, 0.05f, 1.0f, "TopP")]
    [InlineData(0.8f, 40, 1.1f, 0.05f, 1.0f, "TopP")]
    [InlineData(0.8f, 40, 0.9f, -0.1f, 1.0f, "MinP")]
    [InlineData(0.8f, 40, 0.9f, 1.5f, 1.0f, "MinP")]
    [InlineData(0.8f, 40, 0.9f, 0.05f, 0f, "RepetitionPenalty")]
    [InlineData(0.8f, 40, 0.9f, 0.05f, -1f, "RepetitionPenalty")]
    [InlineData(float.NaN, 40, 0.9f, 0.05f, 1.0f, "Temperature")]
    public void RejectsBadOptions(float temperature, int topK, float topP, float minP, float penalty, string parameter)
    {
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, RepetitionPenalty = penalty };
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(options, 10));
        Assert.Equal(parameter, error.ParamName);
        Assert.Contains("must be", error.Message);
    }

    [Fact]
    public void RejectsLogitsOfTheWrongLength()
    {
        var sampler = new Sampler(SamplingOptions.Greedy, 10);
        Assert.Throws<ArgumentException>(() => sampler.Sample(new float[9], []));
    }

    [Fact]
    public void SampleAllocatesNothing()
    {
        var logits = RandomLogits(4096, 2);
        int[] recent = [1, 2, 3, 2, 1];
        var sampler = new Sampler(new SamplingOptions { RepetitionPenalty = 1.1f, Seed = 1 }, logits.Length);
        var full = new Sampler(new SamplingOptions { TopK = 0, Seed = 1 }, logits.Length);
        // Warm up as long as the measured loop: with one warm-up call the runtime's tier-up of these
        // methods (after 30 calls) fell inside it, and one full test run counted 408 bytes there,
        // most likely the runtime's own bookkeeping rather than the sampler's.
        for (int i = 0; i < 100; i++)
        {
            sampler.Sample(logits, recent);
            full.Sample(logits, recent);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            sampler.Sample(logits, recent);
            full.Sample(logits, recent);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
