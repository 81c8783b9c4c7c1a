using SpeCache.LlamaCpp;

namespace SpeCache.Tests.LlamaCpp;

/// <summary>One random Llama with 32-wide heads and 64-wide rows, written once for the class.</summary>
public sealed class WideRandomLlama : IDisposable
{
    public static readonly RandomLlamaShape Shape = new(EmbeddingLength: 64, LayerCount: 2, HeadCount: 2, KvHeadCount: 2, FeedForwardLength: 128);

    public WideRandomLlama()
    {
        // Unique name: the scratch folder is shared by every checkout running tests on this machine.
        Path = System.IO.Path.Combine(TestPaths.Scratch("llamacpp-random"), $"wide-{Guid.NewGuid():N}.gguf");
        RandomLlamaWriter.Write(Path, TestPaths.Llama2TinyRandom, Shape, seed: 1);
    }

    public string Path { get; }

    public void Dispose() => File.Delete(Path);
}

/// <summary>What the vendored tiny model cannot show: quantized KV caches and real weight quantization.</summary>
[Collection(LlamaCppCollection.Name)]
public class RandomLlamaTests(WideRandomLlama wide) : IClassFixture<WideRandomLlama>
{
    const string Prompt = "Hello world, this is a test of the llama.cpp peer.";

    LlamaCppModel Load(LlamaCacheType cacheType = LlamaCacheType.F16, LlamaFlashAttention flashAttention = LlamaFlashAttention.Auto) =>
        LlamaCppModel.Load(wide.Path, threads: 1, contextLength: 256, cacheType, flashAttention);

    [Fact]
    public void TheWrittenModelHasItsShapeAndTheTemplatesTokenizer()
    {
        using var model = Load();
        Assert.Equal(2, model.LayerCount);
        Assert.Equal(64, model.EmbeddingLength);
        Assert.Equal(32000, model.VocabSize);
        Assert.Equal(LlamaFtype.F16, model.FileType);
        Assert.Equal([1, 15043, 3186], model.Tokenize("Hello world"));
        Assert.All(model.Logits(model.Tokenize(Prompt)), v => Assert.True(float.IsFinite(v)));
    }

    // Logits of this model span about +-2.3. Measured against the F16 cache (flash attention on, as Auto
    // picks on this CPU): Q8_0 cache 0.010, Q4_0 cache 0.20 at most. The tolerances leave ~3-5x headroom
    // and still catch a cache that is read wrongly (errors of order 1).
    [Theory]
    [InlineData(LlamaCacheType.Q8_0, 0.05f)]
    [InlineData(LlamaCacheType.Q4_0, 0.6f)]
    public void AQuantizedCacheStaysCloseToF16(LlamaCacheType cacheType, float tolerance)
    {
        using var f16 = Load(LlamaCacheType.F16, LlamaFlashAttention.Enabled);
        using var quantized = Load(cacheType);
        var tokens = f16.Tokenize(Prompt);
        var reference = f16.Logits(tokens);
        var logits = quantized.Logits(tokens);
        LlamaCppModelTests.AssertClose(reference, logits, tolerance);
        Assert.NotEqual(reference, logits);
        Assert.Equal(quantized.GenerateGreedy(tokens, 8), quantized.GenerateGreedy(tokens, 8));
    }

    [Fact]
    public void AQuantizedVCacheWithoutFlashAttentionIsRefused()
    {
        var e = Assert.Throws<LlamaCppException>(() => Load(LlamaCacheType.Q8_0, LlamaFlashAttention.Disabled));
        Assert.Contains("quantized V cache requires flash_attn", e.Message);
    }

    [Fact]
    public void Q8_0QuantizesEveryMatrixAndKeepsTheLogits()
    {
        var output = Path.Combine(TestPaths.Scratch("llamacpp-quantize"), $"wide-q8_0-{Guid.NewGuid():N}.gguf");
        try
        {
            LlamaCppQuantizer.Quantize(wide.Path, output, LlamaFtype.Q8_0, threads: 1);
            foreach (var (name, type) in LlamaCppGguf.TensorTypes(output))
                Assert.Equal(name.Contains("norm") ? "f32" : "q8_0", type);

            using var f16 = Load();
            using var q8 = LlamaCppModel.Load(output, threads: 1, contextLength: 256);
            var tokens = f16.Tokenize(Prompt);
            // Measured 0.033 on logits spanning +-2.3 (Q8_0 keeps ~0.4% per weight, and the activations
            // are quantized to Q8_0 too); 0.15 leaves ~5x headroom.
            LlamaCppModelTests.AssertClose(f16.Logits(tokens), q8.Logits(tokens), 0.15f);
        }
        finally
        {
            File.Delete(output);
        }
    }
}
