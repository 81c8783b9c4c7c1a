using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.ModelFiles.Gguf;

/// <summary>
/// A Llama-family model stored as GGUF (llama, qwen2, qwen3), with its <see cref="ModelConfig"/>
/// read from the <c>{arch}.*</c> metadata and every tensor the forward pass needs checked for
/// presence, shape and type at open time.
/// </summary>
public sealed class GgufModelFile : ModelFile
{
    /// <summary>
    /// Architectures we run. llama.cpp has no plain "mistral" architecture (Mistral 7B GGUFs say
    /// "llama"; "mistral3"/"mistral4" are different models), so neither do we.
    /// </summary>
    public static IReadOnlyList<string> SupportedArchitectures { get; } = ["llama", "qwen2", "qwen3"];

    readonly GgufFile _gguf;

    GgufModelFile(GgufFile gguf, ModelConfig config)
    {
        _gguf = gguf;
        Config = config;
    }

    public static GgufModelFile Open(string path)
    {
        var gguf = GgufFile.Open(path);
        try
        {
            var config = ReadConfig(gguf.Metadata, gguf.Tensors);
            return new GgufModelFile(gguf, config);
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException)
        {
            gguf.Dispose();
            string message = $"GGUF '{System.IO.Path.GetFileName(path)}': {e.Message}";
            throw e is NotSupportedException ? new NotSupportedException(message, e) : new InvalidDataException(message, e);
        }
    }

    /// <summary>The underlying file: version, alignment, tensors in file order.</summary>
    public GgufFile File => _gguf;
    public override string Path => _gguf.Path;
    public override string Format => "gguf";
    public override ModelConfig Config { get; }
    public override IReadOnlyDictionary<string, WeightTensor> Tensors => _gguf.Tensors;
    public override IReadOnlyDictionary<string, object> Metadata => _gguf.Metadata;

    /// <summary>Builds and validates the config; throws a one-line error naming the key or tensor at fault.</summary>
    public static ModelConfig ReadConfig(IReadOnlyDictionary<string, object> metadata, IReadOnlyDictionary<string, WeightTensor> tensors)
    {
        string arch = metadata.GetString("general.architecture");
        if (!SupportedArchitectures.Contains(arch))
            throw new NotSupportedException($"architecture '{arch}' is not supported (supported: {string.Join(", ", SupportedArchitectures)})");

        int Int(string key) => ToInt(key, metadata.GetInt64(key));
        int? OptionalInt(string key) => metadata.TryGetInt64(key, out long v) ? ToInt(key, v) : null;

        int dim = Int($"{arch}.embedding_length");
        int headCount = PerLayerInt(metadata, $"{arch}.attention.head_count") ?? throw MissingKey($"{arch}.attention.head_count");
        int kvHeadCount = PerLayerInt(metadata, $"{arch}.attention.head_count_kv") ?? headCount;
        if (headCount <= 0)
            throw new InvalidDataException($"metadata '{arch}.attention.head_count' is {headCount}, expected a positive count");
        int headDim = OptionalInt($"{arch}.attention.key_length") ?? dim / headCount;
        int? valueLength = OptionalInt($"{arch}.attention.value_length");
        if (valueLength is { } v && v != headDim)
            throw new NotSupportedException($"metadata '{arch}.attention.value_length' is {v} but key_length is {headDim}; different K and V head sizes are not supported");

        if (!tensors.TryGetValue("token_embd.weight", out var embeddings))
            throw new InvalidDataException("tensor 'token_embd.weight' is missing");
        if (embeddings.Shape.Length != 2)
            throw new InvalidDataException($"tensor 'token_embd.weight' has shape {LlamaTensorLayout.Describe(embeddings.Shape)}, expected [embedding_length, vocab_size]");

        var config = new ModelConfig
        {
            Architecture = arch,
            VocabSize = checked((int)embeddings.Shape[1]),
            Dim = dim,
            HiddenDim = PerLayerInt(metadata, $"{arch}.feed_forward_length") ?? throw MissingKey($"{arch}.feed_forward_length"),
            LayerCount = Int($"{arch}.block_count"),
            HeadCount = headCount,
            KvHeadCount = kvHeadCount,
            HeadDim = headDim,
            ContextLength = Int($"{arch}.context_length"),
            RmsNormEps = metadata.GetSingle($"{arch}.attention.layer_norm_rms_epsilon"),
            RopeTheta = metadata.TryGetSingle($"{arch}.rope.freq_base", out float theta) ? theta : 10000f,
            RopeDim = OptionalInt($"{arch}.rope.dimension_count") ?? headDim,
            // llama.cpp's llama_model_rope_type: LLAMA is NORM (adjacent pairs), QWEN2/QWEN3 are NEOX.
            RopeLayout = arch == "llama" ? RopeLayout.Interleaved : RopeLayout.NeoX,
            HasQkvBias = tensors.ContainsKey("blk.0.attn_q.bias"),
            HasQkNorm = tensors.ContainsKey("blk.0.attn_q_norm.weight"),
            TiedEmbeddings = !tensors.ContainsKey("output.weight"),
        };
        config.Validate();
        // llama.cpp requires these for the architectures that have them; the flags above only see layer 0.
        if (arch == "qwen2" && !config.HasQkvBias)
            throw new InvalidDataException("tensor 'blk.0.attn_q.bias' is missing (qwen2 has Q/K/V biases)");
        if (arch == "qwen3" && !config.HasQkNorm)
            throw new InvalidDataException("tensor 'blk.0.attn_q_norm.weight' is missing (qwen3 has Q/K norms)");
        LlamaTensorLayout.Validate(config, tensors);
        return config;
    }

    /// <summary>llama.cpp lets some per-layer sizes be arrays; we run only models where every layer agrees.</summary>
    static int? PerLayerInt(IReadOnlyDictionary<string, object> metadata, string key)
    {
        if (!metadata.TryGetValue(key, out var raw)) return null;
        if (raw is not Array values) return ToInt(key, metadata.GetInt64(key));
        if (values.Length == 0)
            throw new InvalidDataException($"metadata '{key}' is an empty array");
        long? first = null;
        foreach (var value in values)
        {
            long? layer = value is byte or sbyte or ushort or short or uint or int or long ? Convert.ToInt64(value) : null;
            first ??= layer;
            if (layer is null || layer != first)
                throw new NotSupportedException($"metadata '{key}' differs between layers or is not an integer array; per-layer sizes are not supported");
        }
        return ToInt(key, first!.Value);
    }

    static int ToInt(string key, long value) =>
        value is >= 0 and <= int.MaxValue ? (int)value
            : throw new InvalidDataException($"metadata '{key}' is {value}, out of range");

    static InvalidDataException MissingKey(string key) => new($"metadata '{key}' is missing (expected integer)");

    public override void Dispose() => _gguf.Dispose();
}
