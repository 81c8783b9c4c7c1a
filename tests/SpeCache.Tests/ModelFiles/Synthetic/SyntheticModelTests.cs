using SpeCache.KvCache.Policies.Full;
using SpeCache.LlamaCpp;
using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Synthetic;
using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Tokenizers;
using SpeCache.Transformer;

namespace SpeCache.Tests.ModelFiles.Synthetic;

public class SyntheticModelTests
{
    static readonly SyntheticShape Tiny = SyntheticShape.Find("tiny-llama");

    static string Folder(string name)
    {
        string dir = TestPaths.Scratch(Path.Combine("synthetic", name));
        foreach (var file in Directory.GetFiles(dir)) File.Delete(file);
        return dir;
    }

    [Fact]
    public void SameSpecGivesSameBytesWhateverTheThreadCount()
    {
        var spec = new SyntheticModelSpec(Tiny, GgmlType.Q8_0, Seed: 3, Layers: 1);
        string a = Path.Combine(Folder("same-a"), spec.FileName), b = Path.Combine(Folder("same-b"), spec.FileName);
        SyntheticModel.Write(spec, a, threads: 1);
        SyntheticModel.Write(spec, b, threads: 2);
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));

        string c = Path.Combine(Folder("same-c"), "other-seed.gguf");
        SyntheticModel.Write(spec with { Seed = 4 }, c, threads: 1);
        Assert.NotEqual(File.ReadAllBytes(a), File.ReadAllBytes(c));
        Assert.Equal(new FileInfo(a).Length, new FileInfo(c).Length);
    }

    [Fact]
    public void FileNameSaysEveryPartOfTheSpec()
    {
        var spec = new SyntheticModelSpec(Tiny, GgmlType.Q4_K, Seed: 7);
        Assert.Equal("tiny-llama-q4_k-seed7.gguf", spec.FileName);
        Assert.Equal("tiny-llama-q4_k-seed7-l1-v512.gguf", (spec with { Layers = 1, Vocab = 512 }).FileName);
        Assert.Throws<ArgumentOutOfRangeException>(() => (spec with { Vocab = 100 }).Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => (spec with { Layers = 0 }).Validate());
    }

    [Fact]
    public void EnsureWritesAtomicallyAndReusesAnIdenticalFile()
    {
        string dir = Folder("ensure");
        var spec = new SyntheticModelSpec(Tiny, GgmlType.F16, Seed: 1, Layers: 1, Vocab: 512);
        string path = SyntheticModel.Ensure(spec, dir, out bool created);
        Assert.True(created);
        Assert.Equal([path], Directory.GetFiles(dir)); // no temporary file left beside it
        var written = File.GetLastWriteTimeUtc(path);

        Assert.Equal(path, SyntheticModel.Ensure(spec, dir, out created));
        Assert.False(created);
        Assert.Equal(written, File.GetLastWriteTimeUtc(path));

        // A file of the same name that is not this spec's (here: cut short, as a copy interrupted outside
        // our writer would be) is made again, never trusted.
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        Assert.False(SyntheticModel.IsMadeFrom(path, spec));
        SyntheticModel.Ensure(spec, dir, out created);
        Assert.True(created);
        Assert.Equal(bytes, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(dir));
    }

    [Fact]
    public void AnAbandonedWriteLeavesNoFile()
    {
        string dir = Folder("abandoned");
        var spec = new SyntheticModelSpec(Tiny, GgmlType.Q8_0, Layers: 1);
        var progress = new ThrowingProgress(after: 0.5);
        Assert.Throws<OperationCanceledException>(() => SyntheticModel.Write(spec, Path.Combine(dir, spec.FileName), progress, threads: 1));
        Assert.Empty(Directory.GetFiles(dir));
    }

    sealed class ThrowingProgress(double after) : IProgress<double>
    {
        public void Report(double value)
        {
            if (value >= after) throw new OperationCanceledException("stopped half way");
        }
    }

    [Fact]
    public void VocabularyTokenizesAnyTextAndRoundTrips()
    {
        var tokenizer = SyntheticVocabulary.Create(2000);
        Assert.Equal(2000, tokenizer.Vocab.Count);
        Assert.Equal(tokenizer.Vocab.Count, tokenizer.Vocab.Tokens.Distinct().Count());
        const string text = "Once upon a time, 42 dogs ran to us. Ünïcödé\n";
        int[] ids = tokenizer.Encode(text, addBos: false);
        Assert.Contains(tokenizer.Vocab.Find("▁to"), ids); // whole short words are tokens
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    // Our forward pass against llama.cpp's on generated files, as LlamaCppAgreementTests does for converted
    // and ggml-written ones, with the same tolerances per weight type (see there for why each is what it is).
    public static TheoryData<string, string, int?, int?, float> Files => new()
    {
        { "tiny-llama", "f16", null, null, 1e-2f },
        { "tiny-llama", "q8_0", null, null, 3e-2f },
        { "tiny-llama", "q4_k", null, null, 3e-2f },
        { "qwen2.5-0.5b", "q8_0", 1, 512, 3e-2f },
        { "llama-3.2-1b", "q4_k", 1, 512, 3e-2f },
    };

    [Theory]
    [MemberData(nameof(Files))]
    public void LoadsInOurEngineAndLlamaCppWithAgreeingLogits(string shape, string type, int? layers, int? vocab, float tolerance)
    {
        var spec = new SyntheticModelSpec(SyntheticShape.Find(shape), SyntheticModelSpec.Types[type], Seed: 11, layers, vocab);
        string path = SyntheticModel.Ensure(spec, TestPaths.Scratch(Path.Combine("synthetic", "agreement")), out _, threads: 1);

        using var peer = LlamaCppModel.Load(path, threads: 1, contextLength: 128, cacheType: LlamaCacheType.F16, flashAttention: LlamaFlashAttention.Disabled);
        using var file = ModelLoader.Open(path);
        // GGUF carries llama3 RoPE scaling as the rope_freqs tensor, not as a config entry.
        Assert.Equal(spec.Config with { RopeScaling = null }, file.Config);
        Assert.Equal(spec.Config.RopeScaling != null, file.TryTensor(LlamaTensorLayout.RopeFreqs) != null);
        Assert.Equal(spec.Config.LayerCount, peer.LayerCount);
        Assert.Equal(spec.Config.VocabSize, peer.VocabSize);

        const string prompt = "Once upon a time, there was a dog";
        var tokenizer = TokenizerFactory.FromGgufMetadata(file.Metadata);
        int[] tokens = peer.Tokenize(prompt, addSpecial: true);
        Assert.Equal(tokens, tokenizer.Encode(prompt, tokenizer.AddBos));

        float[][] expected = peer.AllLogits(tokens);
        using var backend = new CpuBackend(1);
        var model = new LlamaModel(file, backend);
        using var cache = new FullKvCache(model.Config, 128, FullKvElement.F16);
        float[] actual = model.Forward(tokens, cache, model.CreateState(), allLogits: true).ToArray();

        int n = model.Config.VocabSize;
        double worst = 0;
        for (int p = 0; p < tokens.Length; p++)
        {
            float scale = 0, diff = 0;
            for (int v = 0; v < n; v++)
            {
                Assert.True(float.IsFinite(actual[p * n + v]));
                scale = MathF.Max(scale, MathF.Abs(expected[p][v]));
                diff = MathF.Max(diff, MathF.Abs(expected[p][v] - actual[p * n + v]));
            }
            Assert.True(scale > 0, "llama.cpp's logits are all zero");
            worst = Math.Max(worst, diff / scale);
        }
        TestContext.Current.TestOutputHelper?.WriteLine($"{spec.FileName}: {tokens.Length} positions, worst relative logit difference {worst:E2}");
        Assert.True(worst <= tolerance, $"{spec.FileName}: relative logit difference {worst:E2} exceeds {tolerance:E1}");
    }
}
