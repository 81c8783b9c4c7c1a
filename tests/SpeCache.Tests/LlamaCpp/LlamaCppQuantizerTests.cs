using SpeCache.LlamaCpp;

namespace SpeCache.Tests.LlamaCpp;

[Collection(LlamaCppCollection.Name)]
public class LlamaCppQuantizerTests
{
    // This model's logits span about +-0.25. Measured: Q8_0 leaves them bit for bit unchanged, Q4_0 moves
    // them by at most 1.5e-4. 1e-3 (0.4% of the span) is far above both and far below a broken model.
    const float LogitTolerance = 1e-3f;

    [Theory]
    [InlineData(LlamaFtype.Q8_0, "q8_0")]
    [InlineData(LlamaFtype.Q4_0, "q4_0")]
    public void QuantizedTinyModelLoadsAndKeepsItsLogits(LlamaFtype ftype, string ffnDownType)
    {
        // Unique name: the scratch folder is shared by every checkout running tests on this machine.
        var output = Path.Combine(TestPaths.Scratch("llamacpp-quantize"), $"tiny-{ftype}-{Guid.NewGuid():N}.gguf");
        try
        {
            LlamaCppQuantizer.Quantize(TestPaths.Llama2TinyRandom, output, ftype, threads: 1);

            // Q8_0 and Q4_0 blocks are 32 wide. Only ffn_down has 32-element rows; every other matrix has
            // 8 columns (n_embd = 8), so llama.cpp falls back to F16 for them, and the norms stay F32.
            var types = LlamaCppGguf.TensorTypes(output).ToDictionary(p => p.Key, p => p.Value);
            Assert.Equal(ffnDownType, types["blk.0.ffn_down.weight"]);
            Assert.Equal("f16", types["blk.0.attn_q.weight"]);
            Assert.Equal("f32", types["output_norm.weight"]);

            using var f16 = LlamaCppModel.Load(TestPaths.Llama2TinyRandom, threads: 1, contextLength: 128);
            using var quantized = LlamaCppModel.Load(output, threads: 1, contextLength: 128);
            Assert.Equal(ftype, quantized.FileType);
            var tokens = f16.Tokenize("Hello world, quantized.");
            var reference = f16.Logits(tokens);
            var logits = quantized.Logits(tokens);
            LlamaCppModelTests.AssertClose(reference, logits, LogitTolerance);
            if (ftype == LlamaFtype.Q4_0)
                Assert.NotEqual(reference, logits); // the quantized tensor really is in the computation
        }
        finally
        {
            File.Delete(output);
        }
    }

    [Fact]
    public void AMissingInputThrows() =>
        Assert.Throws<FileNotFoundException>(() => LlamaCppQuantizer.Quantize("no-such-model.gguf", "out.gguf", LlamaFtype.Q4_0));
}
