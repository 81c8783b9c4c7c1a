using SpeCache.ModelFiles;
using SpeCache.Quants;
using SpeCache.Tensors;

namespace SpeCache.Transformer;

/// <summary>One transformer block's weights. Matrices stay in the file's format; vectors become floats.</summary>
public sealed class LayerWeights
{
    public required float[] AttnNorm { get; init; }   // (dim)
    public required WeightTensor Wq { get; init; }      // (dim -> heads * headDim)
    public required WeightTensor Wk { get; init; }      // (dim -> kvHeads * headDim)
    public required WeightTensor Wv { get; init; }      // (dim -> kvHeads * headDim)
    public required WeightTensor Wo { get; init; }      // (heads * headDim -> dim)
    public float[]? Bq { get; init; }                   // (heads * headDim), Qwen2
    public float[]? Bk { get; init; }                   // (kvHeads * headDim), Qwen2
    public float[]? Bv { get; init; }                   // (kvHeads * headDim), Qwen2
    public float[]? QNorm { get; init; }                // (headDim), Qwen3
    public float[]? KNorm { get; init; }                // (headDim), Qwen3
    public required float[] FfnNorm { get; init; }    // (dim)
    public required WeightTensor Gate { get; init; }    // (dim -> hidden)
    public required WeightTensor Up { get; init; }      // (dim -> hidden)
    public required WeightTensor Down { get; init; }    // (hidden -> dim)

    public IEnumerable<WeightTensor> Matrices => [Wq, Wk, Wv, Wo, Gate, Up, Down];

    /// <summary>The same layer with every matrix passed through <paramref name="map"/>.</summary>
    public LayerWeights WithMatrices(Func<WeightTensor, WeightTensor> map) => new()
    {
        AttnNorm = AttnNorm,
        Wq = map(Wq),
        Wk = map(Wk),
        Wv = map(Wv),
        Wo = map(Wo),
        Bq = Bq,
        Bk = Bk,
        Bv = Bv,
        QNorm = QNorm,
        KNorm = KNorm,
        FfnNorm = FfnNorm,
        Gate = map(Gate),
        Up = map(Up),
        Down = map(Down),
    };
}

/// <summary>All weights of a Llama-family model, looked up once by their GGUF names.</summary>
public sealed class LlamaWeights
{
    public required WeightTensor TokenEmbedding { get; init; } // (vocab rows of dim)
    public required LayerWeights[] Layers { get; init; }
    public required float[] OutputNorm { get; init; }          // (dim)
    public required WeightTensor Output { get; init; }         // (dim -> vocab); the embedding when tied
    public float[]? RopeFreqFactors { get; init; }             // (ropeDim / 2), Llama 3.1 GGUF rope_freqs

    /// <summary>
    /// The same weights with every matrix a decode step reads (the layers' and the output head,
    /// which is the embedding when tied) copied into <paramref name="arena"/>, made to fit them. An
    /// untied embedding stays where it is: a token reads one row of it.
    /// </summary>
    public LlamaWeights CopiedToProcessMemory(out WeightArena arena)
    {
        var matrices = Layers.SelectMany(l => l.Matrices).Append(Output).Distinct().ToList();
        var created = new WeightArena(matrices.Sum(WeightArena.SpaceFor));
        var copies = matrices.ToDictionary(m => m, created.Copy);
        arena = created;
        return new LlamaWeights
        {
            TokenEmbedding = copies.GetValueOrDefault(TokenEmbedding, TokenEmbedding),
            Layers = [.. Layers.Select(l => l.WithMatrices(m => copies[m]))],
            OutputNorm = OutputNorm,
            Output = copies[Output],
            RopeFreqFactors = RopeFreqFactors,
        };
    }

    public static LlamaWeights From(ModelFile file)
    {
        var c = file.Config;
        float[] Vector(string name, int length)
        {
            var t = file.Tensor(name);
            if (t.ElementCount != length)
                throw new InvalidDataException($"tensor '{name}' has {t.ElementCount} values, expected {length}");
            var v = new float[length];
            WeightFormats.DequantizeRow(t.Type, t.Bytes, v);
            return v;
        }
        float[]? Optional(string name, int length) => file.TryTensor(name) is null ? null : Vector(name, length);
        WeightTensor Matrix(string name, int cols, int rows)
        {
            var t = file.Tensor(name);
            if (t.Shape.Length != 2 || t.Shape[0] != cols || t.Shape[1] != rows)
                throw new InvalidDataException($"tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{cols}, {rows}]");
            if (!GgmlTypeInfo.IsSupportedWeight(t.Type))
                throw new NotSupportedException($"tensor '{name}' has type {GgmlTypeInfo.Name(t.Type)}, which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
            return t;
        }

        var layers = new LayerWeights[c.LayerCount];
        for (int l = 0; l < c.LayerCount; l++)
        {
            string p = $"blk.{l}.";
            layers[l] = new LayerWeights
            {
                AttnNorm = Vector(p + "attn_norm.weight", c.Dim),
                Wq = Matrix(p + "attn_q.weight", c.Dim, c.QDim),
                Wk = Matrix(p + "attn_k.weight", c.Dim, c.KvDim),
                Wv = Matrix(p + "attn_v.weight", c.Dim, c.KvDim),
                Wo = Matrix(p + "attn_output.weight", c.QDim, c.Dim),
                Bq = c.HasQkvBias ? Vector(p + "attn_q.bias", c.QDim) : null,
                Bk = c.HasQkvBias ? Vector(p + "attn_k.bias", c.KvDim) : null,
                Bv = c.HasQkvBias ? Vector(p + "attn_v.bias", c.KvDim) : null,
                QNorm = c.HasQkNorm ? Vector(p + "attn_q_norm.weight", c.HeadDim) : null,
                KNorm = c.HasQkNorm ? Vector(p + "attn_k_norm.weight", c.HeadDim) : null,
                FfnNorm = Vector(p + "ffn_norm.weight", c.Dim),
                Gate = Matrix(p + "ffn_gate.weight", c.Dim, c.HiddenDim),
                Up = Matrix(p + "ffn_up.weight", c.Dim, c.HiddenDim),
                Down = Matrix(p + "ffn_down.weight", c.HiddenDim, c.Dim),
            };
        }
        var embedding = Matrix("token_embd.weight", c.Dim, c.VocabSize);
        return new LlamaWeights
        {
            TokenEmbedding = embedding,
            Layers = layers,
            OutputNorm = Vector("output_norm.weight", c.Dim),
            Output = c.TiedEmbeddings ? embedding : Matrix("output.weight", c.Dim, c.VocabSize),
            RopeFreqFactors = Optional("rope_freqs.weight", c.RopeDim / 2),
        };
    }
}
