using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.Tests.Eval;

public class RetrievalTasksTests
{
    [Fact]
    public void SamplesAreDeterministicAndWellFormed()
    {
        var a = RetrievalTasks.Needle(1000, 0.5, seed: 3, distractors: 20);
        var b = RetrievalTasks.Needle(1000, 0.5, seed: 3, distractors: 20);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.NotEqual(a.Tokens, RetrievalTasks.Needle(1000, 0.5, seed: 4, distractors: 20).Tokens);
        Assert.Equal(1000, a.Tokens.Length);
        Assert.Equal(RetrievalModel.Bos, a.Tokens[0]);
        Assert.InRange(a.NeedlePosition, 480, 520);
        int pairs = a.Tokens.Count(t => t >= RetrievalModel.Pair(0, 0) && t < RetrievalModel.Query(0));
        Assert.Equal(21, pairs);
        int key = a.Tokens[^1] - RetrievalModel.Query(0);
        Assert.Equal(RetrievalModel.Pair(key, a.AnswerToken - RetrievalModel.Answer(0)), a.Tokens[a.NeedlePosition]);
        Assert.Equal(1, RetrievalTasks.Needle(100, 0, 1).NeedlePosition);
        Assert.Equal(98, RetrievalTasks.Needle(100, 1, 1).NeedlePosition);
    }

    [Fact]
    public void ScoringIsAllOrNothing()
    {
        var logits = new float[RetrievalModel.VocabSize];
        logits[RetrievalModel.Answer(7)] = 5;
        Assert.Equal(100, RetrievalTasks.Score(logits, RetrievalModel.Answer(7)));
        Assert.Equal(0, RetrievalTasks.Score(logits, RetrievalModel.Answer(8)));
    }

    [Theory]
    [InlineData(2, 0.5, 0)]
    [InlineData(100, 1.5, 0)]
    [InlineData(100, 0.5, 300)]
    public void ImpossibleSamplesAreClearErrors(int length, double depth, int distractors) =>
        Assert.Throws<ArgumentException>(() => RetrievalTasks.Needle(length, depth, 1, distractors));
}

/// <summary>The constructed model, written once per test run into the scratch folder.</summary>
public sealed class RetrievalModelFixture : IDisposable
{
    public RetrievalModelFixture()
    {
        Path = System.IO.Path.Combine(TestPaths.Scratch("retrieval"), $"retrieval-{Guid.NewGuid():N}.gguf");
        RetrievalModel.Write(Path, contextLength: 8192);
        File = ModelLoader.Open(Path);
        Backend = new CpuBackend(0);
        Model = new LlamaModel(File, Backend);
    }

    public string Path { get; }
    public ModelFile File { get; }
    public CpuBackend Backend { get; }
    public LlamaModel Model { get; }

    public void Dispose()
    {
        Backend.Dispose();
        File.Dispose();
        System.IO.File.Delete(Path);
    }
}

public class RetrievalModelTests(RetrievalModelFixture fixture) : IClassFixture<RetrievalModelFixture>
{
    [Fact]
    public void FullAttentionRetrievesEveryNeedle()
    {
        var report = RetrievalEval.Run(fixture.Model, "retrieval", ["full"], [512, 4096], [0, 0.3, 0.7, 1], samplesPerCell: 2, distractors: 32);
        Assert.Equal(100, report.Policies[0].Accuracy);
    }

    [Fact]
    public void WithoutTheNeedleTheAnswerIsNotFound()
    {
        // The same question with the needle replaced by a filler: the model cannot know the value,
        // so retrieval really goes through attention to the needle.
        var sample = RetrievalTasks.Needle(2048, 0.5, seed: 1, distractors: 8);
        var tokens = (int[])sample.Tokens.Clone();
        tokens[sample.NeedlePosition] = RetrievalModel.Filler(0);
        using var cache = KvCacheFactory.Create(new KvCacheOptions(), fixture.Model.Config, 2048);
        var logits = fixture.Model.Forward(tokens, cache, fixture.Model.CreateState(64));
        Assert.Equal(0, RetrievalTasks.Score(logits, sample.AnswerToken));
    }

    [Fact]
    public void SpeCacheTwoBitRetrievesLikeFull()
    {
        var report = RetrievalEval.Run(fixture.Model, "retrieval",
            ["specache:bits=2,group=32,k=64", "specache:bits=1,group=64,k=64", "kivi:bits=2"], [4096], [0.1, 0.5, 0.9], samplesPerCell: 2, distractors: 32);
        Assert.Equal(100, report.Policies[0].Accuracy);
        Assert.All(report.Policies, p => Assert.True(p.FastTierBytes > 0));
    }
}

public class HarderRetrievalModelTests
{
    [Fact]
    public void SimilarKeysStillRetrieveUnderFullAndSpeCacheButNotUnderOneBitKivi()
    {
        // Keys that share 75% of their code: a wrong key scores 30 against the right key's 40.
        string path = Path.Combine(TestPaths.Scratch("retrieval"), $"similar-{Guid.NewGuid():N}.gguf");
        RetrievalModel.Write(path, contextLength: 4096, keySimilarity: 0.75);
        try
        {
            using var file = ModelLoader.Open(path);
            using var backend = new CpuBackend(0);
            var model = new LlamaModel(file, backend);
            var report = RetrievalEval.Run(model, "similar", ["full", "specache:bits=1,group=64,k=64", "kivi:bits=1,group=64"],
                [4096], [0.2, 0.5, 0.8], samplesPerCell: 3, distractors: 100);
            Assert.Equal(100, report.Policies[0].Accuracy);
            Assert.Equal(100, report.Policies[1].Accuracy);
            // Measured 65% with 4 samples at 5 depths: 1-bit scores cannot tell similar keys apart,
            // the 16-bit top-k pairs can.
            Assert.True(report.Policies[2].Accuracy < 100, $"1-bit kivi {report.Policies[2].Accuracy}%");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void SimilarityOutsideItsRangeIsRefused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => RetrievalModel.Write(Path.Combine(TestPaths.Scratch("retrieval"), "never.gguf"), keySimilarity: 0.95));
}
