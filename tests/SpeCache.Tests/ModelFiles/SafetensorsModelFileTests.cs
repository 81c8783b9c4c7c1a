using SpeCache.ModelFiles.Safetensors;
using SpeCache.Transformer;

namespace SpeCache.Tests.ModelFiles;

public class SafetensorsModelFileTests
{
    [Fact]
    public void TinyStories656KLoadsWithTiedEmbeddingsAndNeoXRope()
    {
        using var model = SafetensorsModelFile.Open(TestPaths.TinyStories656K);
        var c = model.Config;
        Assert.Equal((2, 128, 384, 8, 4, 2048, 512), (c.LayerCount, c.Dim, c.HiddenDim, c.HeadCount, c.KvHeadCount, c.VocabSize, c.ContextLength));
        Assert.True(c.TiedEmbeddings);
        Assert.Equal(RopeLayout.NeoX, c.RopeLayout);
        Assert.Equal(1e-6f, c.RmsNormEps);
        // The checkpoint keeps only lm_head; the embedding is the same matrix.
        Assert.Equal([128L, 2048], model.Tensor("token_embd.weight").Shape);
        Assert.Equal([128L, 64], model.Tensor("blk.1.attn_k.weight").Shape);
    }

    static string CopyModel(string name)
    {
        string dir = TestPaths.Scratch(Path.Combine("safetensors", name));
        foreach (var f in Directory.GetFiles(TestPaths.TinyStories656K))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
        return dir;
    }

    [Fact]
    public void UnsupportedArchitectureIsRefused()
    {
        string dir = CopyModel("arch");
        string config = Path.Combine(dir, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\""));
        var e = Assert.Throws<NotSupportedException>(() => SafetensorsModelFile.Open(dir).Dispose());
        Assert.Contains("architecture 'gpt_neox' is not supported", e.Message);
    }

    [Fact]
    public void TruncatedWeightsAreRefused()
    {
        string dir = CopyModel("truncated");
        string weights = Path.Combine(dir, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsModelFile.Open(dir).Dispose());
        Assert.Contains("outside the file", e.Message);
    }

    [Fact]
    public void CorruptHeaderIsRefused()
    {
        string dir = CopyModel("header");
        string weights = Path.Combine(dir, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        bytes[8] = (byte)'#';
        File.WriteAllBytes(weights, bytes);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsModelFile.Open(dir).Dispose());
        Assert.Contains("not valid JSON", e.Message);
    }
}
