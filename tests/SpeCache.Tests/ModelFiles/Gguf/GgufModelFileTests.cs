using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Quants;
using SpeCache.Transformer;

namespace SpeCache.Tests.ModelFiles.Gguf;

public class GgufModelFileTests(ITestOutputHelper output)
{
    [Fact]
    public void ReadsTheConfigTheMetadataStates()
    {
        using var model = GgufModelFile.Open(TestPaths.Llama2TinyRandom);
        var m = model.Metadata;
        var c = model.Config;
        output.WriteLine(c.ToString());

        Assert.Equal("gguf", model.Format);
        Assert.Equal("llama", c.Architecture);
        Assert.Equal(m.GetInt64("llama.context_length"), c.ContextLength);
        Assert.Equal(m.GetInt64("llama.embedding_length"), c.Dim);
        Assert.Equal(m.GetInt64("llama.block_count"), c.LayerCount);
        Assert.Equal(m.GetInt64("llama.feed_forward_length"), c.HiddenDim);
        Assert.Equal(m.GetInt64("llama.attention.head_count"), c.HeadCount);
        Assert.Equal(m.TryGetInt64("llama.attention.head_count_kv", out var kv) ? kv : c.HeadCount, c.KvHeadCount);
        Assert.Equal(m.GetSingle("llama.attention.layer_norm_rms_epsilon"), c.RmsNormEps);
        Assert.Equal(m.TryGetSingle("llama.rope.freq_base", out var theta) ? theta : 10000f, c.RopeTheta);
        Assert.Equal(m.TryGetInt64("llama.rope.dimension_count", out var rot) ? rot : c.HeadDim, c.RopeDim);
        Assert.Equal(c.Dim / c.HeadCount, c.HeadDim);
        Assert.Equal(RopeLayout.Interleaved, c.RopeLayout);
        Assert.Equal(model.Tensor("token_embd.weight").Shape[1], c.VocabSize);
        Assert.Equal(m.GetArray<string>("tokenizer.ggml.tokens").Length, c.VocabSize);
        Assert.Equal(!model.Tensors.ContainsKey("output.weight"), c.TiedEmbeddings);
        Assert.False(c.HasQkvBias);
        Assert.False(c.HasQkNorm);
    }

    /// <summary>The vendored model, held in memory so a test can break one thing and write it back out.</summary>
    sealed class EditableModel
    {
        public readonly List<(string Key, object Value)> Metadata = [];
        public readonly List<(string Name, GgmlType Type, long[] Shape, byte[] Data)> Tensors = [];

        public EditableModel()
        {
            using var source = GgufFile.Open(TestPaths.Llama2TinyRandom);
            foreach (var key in source.MetadataKeys) Metadata.Add((key, source.Metadata[key]));
            foreach (var t in source.TensorsInFileOrder) Tensors.Add((t.Name, t.Type, t.Shape, t.Bytes.ToArray()));
        }

        public void SetMetadata(string key, object value) => Metadata[Metadata.FindIndex(e => e.Key == key)] = (key, value);

        /// <summary>Relabels the llama model as <paramref name="arch"/> and adds that architecture's extra tensors to every layer.</summary>
        public void BecomeQwen(string arch)
        {
            for (int i = 0; i < Metadata.Count; i++)
                if (Metadata[i].Key.StartsWith("llama."))
                    Metadata[i] = (arch + Metadata[i].Key["llama".Length..], Metadata[i].Value);
            SetMetadata("general.architecture", arch);
            long headCount = System.Convert.ToInt64(Metadata.Single(e => e.Key == arch + ".attention.head_count").Value);
            foreach (var q in Tensors.Where(t => t.Name.EndsWith(".attn_q.weight")).ToList())
            {
                string blk = q.Name[..^"attn_q.weight".Length];
                long qWidth = q.Shape[1], kvWidth = Tensors.Single(t => t.Name == blk + "attn_k.weight").Shape[1];
                void AddF32(string name, long length) => Tensors.Add((blk + name, GgmlType.F32, [length], new byte[length * 4]));
                if (arch == "qwen2")
                {
                    AddF32("attn_q.bias", qWidth);
                    AddF32("attn_k.bias", kvWidth);
                    AddF32("attn_v.bias", kvWidth);
                }
                else
                {
                    AddF32("attn_q_norm.weight", qWidth / headCount);
                    AddF32("attn_k_norm.weight", qWidth / headCount);
                }
            }
        }

        public string Save(string name)
        {
            var path = Path.Combine(TestPaths.Scratch("gguf-model"), name);
            using var writer = new GgufWriter(path);
            foreach (var (key, value) in Metadata) writer.SetMetadata(key, value);
            foreach (var t in Tensors) writer.AddTensor(t.Name, t.Type, t.Shape);
            foreach (var t in Tensors) writer.WriteTensorData(t.Data);
            writer.Finish();
            return path;
        }
    }

    [Theory]
    [InlineData("qwen2")]
    [InlineData("qwen3")]
    public void QwenModelsAreNeoXWithTheirExtraTensors(string arch)
    {
        var edited = new EditableModel();
        edited.BecomeQwen(arch);
        using var model = GgufModelFile.Open(edited.Save($"{arch}.gguf"));
        Assert.Equal(arch, model.Config.Architecture);
        Assert.Equal(RopeLayout.NeoX, model.Config.RopeLayout);
        Assert.Equal(arch == "qwen2", model.Config.HasQkvBias);
        Assert.Equal(arch == "qwen3", model.Config.HasQkNorm);
        Assert.Equal(8, model.Config.Dim);
    }

    [Fact]
    public void Qwen2WithoutBiasesIsRefused()
    {
        var edited = new EditableModel();
        edited.BecomeQwen("qwen2");
        edited.Tensors.RemoveAll(t => t.Name.EndsWith(".bias"));
        var error = Assert.Throws<InvalidDataException>(() => GgufModelFile.Open(edited.Save("qwen2-nobias.gguf")));
        Assert.Contains("'blk.0.attn_q.bias' is missing", error.Message);
    }

    [Fact]
    public void UnsupportedArchitectureIsRefused()
    {
        var model = new EditableModel();
        model.SetMetadata("general.architecture", "gpt2");
        var error = Assert.Throws<NotSupportedException>(() => GgufModelFile.Open(model.Save("gpt2.gguf")));
        Assert.Equal("GGUF 'gpt2.gguf': architecture 'gpt2' is not supported (supported: llama, qwen2, qwen3)", error.Message);
    }

    [Fact]
    public void MissingTensorIsRefused()
    {
        var model = new EditableModel();
        int layers = (int)new Dictionary<string, object>(model.Metadata.Select(e => KeyValuePair.Create(e.Key, e.Value))).GetInt64("llama.block_count");
        string name = $"blk.{layers - 1}.ffn_down.weight";
        model.Tensors.RemoveAll(t => t.Name == name);
        var error = Assert.Throws<InvalidDataException>(() => GgufModelFile.Open(model.Save("missing.gguf")));
        Assert.StartsWith($"GGUF 'missing.gguf': tensor '{name}' is missing (expected shape [", error.Message);
    }

    [Fact]
    public void ShapeMismatchIsRefused()
    {
        var model = new EditableModel();
        int i = model.Tensors.FindIndex(t => t.Name == "blk.0.attn_k.weight");
        var k = model.Tensors[i];
        model.Tensors[i] = (k.Name, k.Type, [k.Shape[1], k.Shape[0]], k.Data); // same bytes, transposed shape
        if (k.Shape[0] == k.Shape[1])
            model.Tensors[i] = (k.Name, GgmlType.F32, [k.Shape[0] / 2, k.Shape[1]], k.Data);
        var error = Assert.Throws<InvalidDataException>(() => GgufModelFile.Open(model.Save("shape.gguf")));
        Assert.Matches(@"^GGUF 'shape\.gguf': tensor 'blk\.0\.attn_k\.weight' has shape \[\d+, \d+\], expected \[\d+, \d+\]$", error.Message);
    }

    [Fact]
    public void UnsupportedWeightTypeIsRefused()
    {
        var model = new EditableModel();
        int i = model.Tensors.FindIndex(t => t.Name == "blk.0.attn_q.weight");
        var q = model.Tensors[i];
        // The tiny model's rows are narrower than any quant block, so use a one-element-block type we do not compute with.
        model.Tensors[i] = (q.Name, GgmlType.F64, q.Shape, new byte[q.Shape[0] * q.Shape[1] * sizeof(double)]);
        var error = Assert.Throws<NotSupportedException>(() => GgufModelFile.Open(model.Save("f64.gguf")));
        Assert.Equal("GGUF 'f64.gguf': tensor 'blk.0.attn_q.weight' has type F64, which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)", error.Message);
    }

    [Fact]
    public void MissingRequiredKeyNamesTheKey()
    {
        var model = new EditableModel();
        model.Metadata.RemoveAll(e => e.Key == "llama.block_count");
        var error = Assert.Throws<InvalidDataException>(() => GgufModelFile.Open(model.Save("no-blocks.gguf")));
        Assert.Equal("GGUF 'no-blocks.gguf': metadata 'llama.block_count' is missing (expected integer)", error.Message);
    }
}
