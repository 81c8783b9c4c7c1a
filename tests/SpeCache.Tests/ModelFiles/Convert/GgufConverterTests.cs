using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Conversion;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.Tests.ModelFiles.Convert;

public class GgufConverterTests
{
    /// <summary>Another model's tensors under a different config, e.g. the same weights declared NeoX.</summary>
    sealed class Relabeled(ModelFile inner, ModelConfig config) : ModelFile
    {
        public override string Path => inner.Path;
        public override string Format => inner.Format;
        public override ModelConfig Config => config;
        public override IReadOnlyDictionary<string, WeightTensor> Tensors => inner.Tensors;
        public override IReadOnlyDictionary<string, object> Metadata => inner.Metadata;
        public override void Dispose() => inner.Dispose();
    }

    static float[] Floats(WeightTensor t, long row)
    {
        var values = new float[t.Cols];
        WeightFormats.DequantizeRow(t.Type, t.Row(row), values);
        return values;
    }

    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    public void ConvertedTinyModelHasTheSameValues(GgmlType weightType)
    {
        var path = Path.Combine(TestPaths.Scratch("gguf-convert"), $"tiny-{weightType}.gguf");
        using var source = GgufModelFile.Open(TestPaths.Llama2TinyRandom);
        Assert.Equal(GgmlType.F16, source.Tensor("blk.0.attn_q.weight").Type); // so F16 -> F32 and F16 -> F16 are exact
        var extra = new Dictionary<string, object> { ["general.name"] = "converted", ["tokenizer.ggml.add_bos_token"] = true };
        double lastProgress = 0;
        var progress = new SynchronousProgress(p => { Assert.True(p >= lastProgress); lastProgress = p; });

        var notes = GgufConverter.Write(source, path, weightType, extra, progress);

        Assert.Empty(notes); // llama layout already interleaved, every row whole
        Assert.Equal(1.0, lastProgress, 6);
        using var converted = GgufModelFile.Open(path);
        Assert.Equal(source.Config, converted.Config);
        Assert.Equal("converted", converted.Metadata.GetString("general.name"));
        Assert.True(converted.Metadata.GetBool("tokenizer.ggml.add_bos_token"));
        Assert.Equal(source.Metadata.GetArray<string>("tokenizer.ggml.tokens"), converted.Metadata.GetArray<string>("tokenizer.ggml.tokens"));
        Assert.Equal(source.Metadata.GetArray<float>("tokenizer.ggml.scores"), converted.Metadata.GetArray<float>("tokenizer.ggml.scores"));
        Assert.IsType<uint>(converted.Metadata["llama.block_count"]);

        Assert.Equal(source.Tensors.Keys.Order(), converted.Tensors.Keys.Order());
        foreach (var (name, original) in source.Tensors)
        {
            var copy = converted.Tensor(name);
            Assert.Equal(original.Shape, copy.Shape);
            Assert.Equal(original.Shape.Length == 1 ? GgmlType.F32 : weightType, copy.Type);
            for (long row = 0; row < original.Rows; row++)
                Assert.Equal(Floats(original, row), Floats(copy, row));
        }
    }

    [Fact]
    public void NeoXSourceWrittenAsLlamaHasItsQAndKRowsInterleaved()
    {
        var path = Path.Combine(TestPaths.Scratch("gguf-convert"), "neox.gguf");
        using var tiny = GgufModelFile.Open(TestPaths.Llama2TinyRandom);
        var config = tiny.Config with { RopeLayout = RopeLayout.NeoX };
        using var source = new Relabeled(GgufModelFile.Open(TestPaths.Llama2TinyRandom), config);

        var notes = GgufConverter.Write(source, path, GgmlType.F32, new Dictionary<string, object>());

        Assert.Contains(notes, n => n.Contains("permuted"));
        using var converted = GgufModelFile.Open(path);
        int half = config.HeadDim / 2;
        foreach (var (name, heads) in new[] { ("blk.0.attn_q.weight", config.HeadCount), ("blk.0.attn_k.weight", config.KvHeadCount) })
        {
            var before = source.Tensor(name);
            var after = converted.Tensor(name);
            for (int head = 0; head < heads; head++)
                for (int i = 0; i < half; i++)
                {
                    // NeoX pair (i, i + d/2) of this head becomes the adjacent rows (2i, 2i + 1).
                    int start = head * config.HeadDim;
                    Assert.Equal(Floats(before, start + i), Floats(after, start + 2 * i));
                    Assert.Equal(Floats(before, start + i + half), Floats(after, start + 2 * i + 1));
                }
        }
        // Projections RoPE does not touch are copied as they are.
        Assert.Equal(Floats(source.Tensor("blk.0.attn_v.weight"), 1), Floats(converted.Tensor("blk.0.attn_v.weight"), 1));
    }

    [Fact]
    public void UnsupportedTargetTypeFailsBeforeWriting()
    {
        var path = Path.Combine(TestPaths.Scratch("gguf-convert"), "q5k.gguf");
        File.Delete(path);
        using var source = GgufModelFile.Open(TestPaths.Llama2TinyRandom);
        var error = Assert.Throws<NotSupportedException>(() => GgufConverter.Write(source, path, GgmlType.Q5_K, new Dictionary<string, object>()));
        Assert.Contains("Q5_K", error.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Llama3RopeFactorsSpanOneToTheScalingFactor()
    {
        var config = new ModelConfig
        {
            Architecture = "llama",
            VocabSize = 1,
            Dim = 4096,
            HiddenDim = 1,
            LayerCount = 1,
            HeadCount = 32,
            KvHeadCount = 8,
            HeadDim = 128,
            RopeDim = 128,
            ContextLength = 131072,
            RopeTheta = 500000,
        };
        var factors = GgufConverter.Llama3RopeFactors(config, new Llama3RopeScaling(8, 1, 4, 8192));
        Assert.Equal(64, factors.Length);
        Assert.Equal(1f, factors[0]);   // short wavelengths are not scaled
        Assert.Equal(8f, factors[^1]);  // long ones are divided by the full factor
        for (int i = 1; i < factors.Length; i++) Assert.True(factors[i] >= factors[i - 1]);
        Assert.Contains(factors, f => f > 1 && f < 8); // and the band between is smoothed
    }

    /// <summary>Progress&lt;T&gt; posts to the thread pool; tests want the calls in order, on this thread.</summary>
    sealed class SynchronousProgress(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }
}
