using SpeCache.ModelFiles.Llama2c;

namespace SpeCache.Tests.ModelFiles;

public class Llama2cModelFileTests
{
    [Fact]
    public void Stories260KHasTheDocumentedShape()
    {
        using var model = Llama2cModelFile.Open(TestPaths.Stories260K);
        var c = model.Config;
        // models/stories260k/SOURCE.md: 5 layers, dim 64, hidden 172, 8 heads, 4 KV heads, vocab 512, context 512.
        Assert.Equal((5, 64, 172, 8, 4, 512, 512), (c.LayerCount, c.Dim, c.HiddenDim, c.HeadCount, c.KvHeadCount, c.VocabSize, c.ContextLength));
        Assert.True(c.TiedEmbeddings);
        Assert.Equal([64L, 172], model.Tensor("blk.4.ffn_gate.weight").Shape);
        Assert.Null(model.TryTensor("output.weight"));
    }

    [Fact]
    public void TruncatedCheckpointIsRejectedWithOneLine()
    {
        byte[] bytes = File.ReadAllBytes(TestPaths.Stories260K);
        foreach (int length in new[] { 3, 28, 1000, bytes.Length / 2, bytes.Length - 4 })
        {
            string path = Path.Combine(TestPaths.Scratch("llama2c"), $"truncated-{length}.bin");
            File.WriteAllBytes(path, bytes[..length]);
            var e = Assert.Throws<InvalidDataException>(() => Llama2cModelFile.Open(path).Dispose());
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains(path, e.Message);
        }
    }

    [Fact]
    public void GarbageIsNotMistakenForACheckpoint()
    {
        string path = Path.Combine(TestPaths.Scratch("llama2c"), "garbage.bin");
        File.WriteAllBytes(path, Enumerable.Range(0, 4096).Select(i => (byte)(i * 37)).ToArray());
        var e = Assert.Throws<InvalidDataException>(() => Llama2cModelFile.Open(path).Dispose());
        Assert.Contains("not a llama2.c checkpoint", e.Message);
    }
}
