using System.Buffers.Binary;
using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.ModelFiles.Llama2c;

/// <summary>
/// A llama2.c checkpoint (Karpathy's legacy format, version 0): a header of seven int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
/// means the classifier is stored separately) followed by fp32 weights stacked per layer.
/// Each layer's slice of the stacked arrays becomes one zero-copy <see cref="WeightTensor"/>
/// under its GGUF name, so the rest of the engine sees the same model as from a GGUF file.
/// </summary>
public sealed unsafe class Llama2cModelFile : ModelFile
{
    const int HeaderBytes = 7 * sizeof(int);
    readonly MappedFile _file;
    readonly Dictionary<string, WeightTensor> _tensors = new();
    readonly Dictionary<string, object> _metadata = new();

    Llama2cModelFile(MappedFile file, ModelConfig config)
    {
        _file = file;
        Config = config;
    }

    public override string Path => _file.Path;
    public override string Format => "llama2c";
    public override ModelConfig Config { get; }
    public override IReadOnlyDictionary<string, WeightTensor> Tensors => _tensors;
    public override IReadOnlyDictionary<string, object> Metadata => _metadata;

    public static Llama2cModelFile Open(string path)
    {
        var file = new MappedFile(path);
        try
        {
            var header = new int[7];
            for (int i = 0; i < header.Length; i++)
                header[i] = BinaryPrimitives.ReadInt32LittleEndian(file.Span(i * 4, 4));
            int Field(int i) => header[i];
            int dim = Field(0), hidden = Field(1), layers = Field(2), heads = Field(3), kvHeads = Field(4), vocab = Field(5), seqLen = Field(6);
            bool sharedClassifier = vocab > 0;
            vocab = Math.Abs(vocab);
            if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || vocab <= 0 || seqLen <= 0
                || dim > 1 << 16 || hidden > 1 << 18 || layers > 1024 || heads > dim || vocab > 1 << 22 || seqLen > 1 << 24
                || dim % heads != 0)
                throw new InvalidDataException($"{path}: not a llama2.c checkpoint (implausible header: dim={dim} hidden={hidden} layers={layers} heads={heads} kv_heads={kvHeads} vocab={vocab} seq_len={seqLen})");

            int headDim = dim / heads;
            var config = new ModelConfig
            {
                Architecture = "llama",
                VocabSize = vocab,
                Dim = dim,
                HiddenDim = hidden,
                LayerCount = layers,
                HeadCount = heads,
                KvHeadCount = kvHeads,
                HeadDim = headDim,
                RopeDim = headDim,
                ContextLength = seqLen,
                RmsNormEps = 1e-5f,
                RopeTheta = 10000f,
                RopeLayout = RopeLayout.Interleaved,
                TiedEmbeddings = sharedClassifier,
            };
            config.Validate();
            var model = new Llama2cModelFile(file, config);
            model.MapWeights(sharedClassifier);
            model._metadata["general.architecture"] = "llama";
            model._metadata["general.name"] = System.IO.Path.GetFileNameWithoutExtension(path);
            return model;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    void MapWeights(bool sharedClassifier)
    {
        var c = Config;
        long offset = HeaderBytes;
        int kvDim = c.KvDim;

        // Walks the file in llama2.c's order; each call claims the next stacked array.
        WeightTensor[] Stacked(string name, int cols, int rows)
        {
            var perLayer = new WeightTensor[c.LayerCount];
            for (int l = 0; l < c.LayerCount; l++)
                perLayer[l] = Claim($"blk.{l}.{name}", cols, rows);
            return perLayer;
        }

        WeightTensor Claim(string name, int cols, int rows)
        {
            long bytes = (long)cols * rows * sizeof(float);
            if (offset + bytes > _file.Length)
                throw new InvalidDataException($"{_file.Path}: truncated: tensor '{name}' needs bytes {offset}..{offset + bytes}, the file has {_file.Length}");
            long[] shape = rows == 1 ? [cols] : [cols, rows];
            var t = new WeightTensor(name, GgmlType.F32, shape, _file.Pointer + offset, bytes);
            _tensors[name] = t;
            offset += bytes;
            return t;
        }

        Claim("token_embd.weight", c.Dim, c.VocabSize);
        Stacked("attn_norm.weight", c.Dim, 1);
        Stacked("attn_q.weight", c.Dim, c.QDim);
        Stacked("attn_k.weight", c.Dim, kvDim);
        Stacked("attn_v.weight", c.Dim, kvDim);
        Stacked("attn_output.weight", c.QDim, c.Dim);
        Stacked("ffn_norm.weight", c.Dim, 1);
        Stacked("ffn_gate.weight", c.Dim, c.HiddenDim);
        Stacked("ffn_down.weight", c.HiddenDim, c.Dim);
        Stacked("ffn_up.weight", c.Dim, c.HiddenDim);
        Claim("output_norm.weight", c.Dim, 1);
        // llama2.c stores precomputed RoPE tables (seq_len * head_size / 2 floats, twice); we compute our own.
        offset += 2L * c.ContextLength * (c.HeadDim / 2) * sizeof(float);
        if (!sharedClassifier)
            Claim("output.weight", c.Dim, c.VocabSize);
        if (offset != _file.Length)
            throw new InvalidDataException($"{_file.Path}: size {_file.Length} does not match the header (expected {offset} bytes)");
    }

    /// <summary>llama2.c keeps the tokenizer apart: tokenizer.bin, or a single tok*.bin, beside the checkpoint.</summary>
    public static string FindTokenizer(string modelPath)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath))!;
        string standard = System.IO.Path.Combine(dir, "tokenizer.bin");
        if (File.Exists(standard)) return standard;
        var candidates = Directory.GetFiles(dir, "tok*.bin");
        if (candidates.Length == 1) return candidates[0];
        throw new FileNotFoundException($"{modelPath}: a llama2.c checkpoint needs its tokenizer (tokenizer.bin or tok*.bin beside it, or --tokenizer)");
    }

    public override void Dispose() => _file.Dispose();
}
