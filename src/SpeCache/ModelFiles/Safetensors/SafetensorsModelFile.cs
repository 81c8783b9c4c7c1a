using System.Buffers.Binary;
using System.Text.Json;
using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.ModelFiles.Safetensors;

/// <summary>
/// A Hugging Face model folder: config.json plus one or more .safetensors shards (each an 8-byte
/// header length, a JSON header, then raw little-endian tensors). Tensors are mapped, not copied,
/// and renamed to GGUF names. Hugging Face stores Llama Q/K weights for half-split (NeoX) RoPE, so
/// the config says so and the forward pass rotates accordingly; nothing is permuted at load.
/// </summary>
public sealed unsafe class SafetensorsModelFile : ModelFile
{
    static readonly string[] SupportedArchitectures = ["llama", "mistral", "qwen2", "qwen3"];
    readonly List<MappedFile> _shards = new();
    readonly Dictionary<string, WeightTensor> _tensors = new();
    readonly Dictionary<string, object> _metadata = new();
    ModelConfig? _config;

    SafetensorsModelFile(string path) => Path = path;

    public override string Path { get; }
    public override string Format => "safetensors";
    public override ModelConfig Config => _config!;
    public override IReadOnlyDictionary<string, WeightTensor> Tensors => _tensors;
    public override IReadOnlyDictionary<string, object> Metadata => _metadata;

    /// <summary>The folder holding tokenizer.json and tokenizer_config.json, if any.</summary>
    public string Directory => System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(System.IO.Path.Combine(Path, "config.json")))!;

    /// <summary>Opens a model folder, or a single .safetensors file whose folder holds config.json.</summary>
    public static SafetensorsModelFile Open(string pathOrDirectory)
    {
        string dir = System.IO.Directory.Exists(pathOrDirectory) ? pathOrDirectory : System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(pathOrDirectory))!;
        string configPath = System.IO.Path.Combine(dir, "config.json");
        if (!File.Exists(configPath)) throw new InvalidDataException($"{dir}: no config.json beside the safetensors weights");
        string[] shards = System.IO.Directory.Exists(pathOrDirectory)
            ? System.IO.Directory.GetFiles(dir, "*.safetensors").Order(StringComparer.Ordinal).ToArray()
            : [pathOrDirectory];
        if (shards.Length == 0) throw new InvalidDataException($"{dir}: no .safetensors files");

        var model = new SafetensorsModelFile(dir);
        try
        {
            foreach (var shard in shards) model.MapShard(shard);
            model._config = ReadConfig(configPath, model);
            model._config.Validate();
            model.FillMetadata(dir);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    void MapShard(string path)
    {
        var file = new MappedFile(path);
        _shards.Add(file);
        if (file.Length < 8) throw new InvalidDataException($"{path}: truncated safetensors header");
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(file.Span(0, 8));
        if (headerLength <= 0 || headerLength > 100_000_000 || 8 + headerLength > file.Length)
            throw new InvalidDataException($"{path}: invalid safetensors header length {headerLength}");
        long dataStart = 8 + headerLength;
        JsonDocument header;
        try { header = JsonDocument.Parse(file.Span(8, (int)headerLength).ToArray()); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: safetensors header is not valid JSON ({e.Message})"); }
        using (header)
        {
            foreach (var entry in header.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__") continue;
                var info = entry.Value;
                string dtype = info.GetProperty("dtype").GetString() ?? "";
                var type = dtype switch
                {
                    "F32" => GgmlType.F32,
                    "F16" => GgmlType.F16,
                    "BF16" => GgmlType.BF16,
                    _ => throw new NotSupportedException($"{path}: tensor '{entry.Name}' has dtype {dtype}, which is not supported (supported: F32, F16, BF16)"),
                };
                // Safetensors shapes are outermost-first; ggml order is innermost-first.
                long[] shape = info.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).Reverse().ToArray();
                if (shape.Length == 0) shape = [1];
                var offsets = info.GetProperty("data_offsets");
                long begin = offsets[0].GetInt64(), end = offsets[1].GetInt64();
                if (begin < 0 || end < begin || dataStart + end > file.Length)
                    throw new InvalidDataException($"{path}: tensor '{entry.Name}' lies outside the file (truncated?)");
                string? name = GgufName(entry.Name);
                if (name == null) continue;
                _tensors[name] = new WeightTensor(name, type, shape, file.Pointer + dataStart + begin, end - begin);
            }
        }
    }

    /// <summary>Hugging Face Llama-family tensor names to GGUF names; null for tensors we do not use.</summary>
    static string? GgufName(string hf)
    {
        switch (hf)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        const string prefix = "model.layers.";
        if (!hf.StartsWith(prefix, StringComparison.Ordinal)) return null;
        int dot = hf.IndexOf('.', prefix.Length);
        if (dot < 0) return null;
        string layer = hf[prefix.Length..dot];
        string rest = hf[(dot + 1)..];
        string? suffix = rest switch
        {
            "input_layernorm.weight" => "attn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.q_proj.bias" => "attn_q.bias",
            "self_attn.k_proj.bias" => "attn_k.bias",
            "self_attn.v_proj.bias" => "attn_v.bias",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "self_attn.q_norm.weight" => "attn_q_norm.weight",
            "self_attn.k_norm.weight" => "attn_k_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            _ => null,
        };
        return suffix == null ? null : $"blk.{layer}.{suffix}";
    }

    static ModelConfig ReadConfig(string configPath, SafetensorsModelFile model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
        var root = doc.RootElement;
        string arch = root.TryGetProperty("model_type", out var mt) ? mt.GetString() ?? "" : "";
        if (!SupportedArchitectures.Contains(arch))
            throw new NotSupportedException($"{configPath}: architecture '{arch}' is not supported (supported: {string.Join(", ", SupportedArchitectures)})");

        int Int(string key, int? fallback = null)
        {
            if (root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number) return v.GetInt32();
            return fallback ?? throw new InvalidDataException($"{configPath}: missing '{key}'");
        }
        float Float(string key, float fallback) =>
            root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetSingle() : fallback;

        int dim = Int("hidden_size");
        int heads = Int("num_attention_heads");
        int headDim = root.TryGetProperty("head_dim", out var hd) && hd.ValueKind == JsonValueKind.Number ? hd.GetInt32() : dim / heads;
        bool tied = root.TryGetProperty("tie_word_embeddings", out var tw) && tw.ValueKind == JsonValueKind.True;

        // Tied checkpoints may keep only one of the two copies (tinystories-656k keeps lm_head only).
        if (!model._tensors.ContainsKey("token_embd.weight") && model._tensors.TryGetValue("output.weight", out var head))
            model._tensors["token_embd.weight"] = head;
        if (tied) model._tensors.Remove("output.weight");

        Llama3RopeScaling? scaling = null;
        if (root.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object)
        {
            string type = rs.TryGetProperty("rope_type", out var rt) ? rt.GetString() ?? "" : rs.TryGetProperty("type", out var t2) ? t2.GetString() ?? "" : "";
            if (type != "llama3")
                throw new NotSupportedException($"{configPath}: rope_scaling type '{type}' is not supported (supported: llama3)");
            scaling = new Llama3RopeScaling(
                rs.GetProperty("factor").GetSingle(),
                rs.GetProperty("low_freq_factor").GetSingle(),
                rs.GetProperty("high_freq_factor").GetSingle(),
                rs.GetProperty("original_max_position_embeddings").GetInt32());
        }

        return new ModelConfig
        {
            Architecture = arch,
            VocabSize = model._tensors.TryGetValue("token_embd.weight", out var emb) ? (int)emb.Rows : Int("vocab_size"),
            Dim = dim,
            HiddenDim = Int("intermediate_size"),
            LayerCount = Int("num_hidden_layers"),
            HeadCount = heads,
            KvHeadCount = Int("num_key_value_heads", heads),
            HeadDim = headDim,
            RopeDim = headDim,
            ContextLength = Int("max_position_embeddings"),
            RmsNormEps = Float("rms_norm_eps", 1e-6f),
            RopeTheta = Float("rope_theta", 10000f),
            RopeLayout = RopeLayout.NeoX,
            RopeScaling = scaling,
            HasQkvBias = model._tensors.ContainsKey("blk.0.attn_q.bias"),
            HasQkNorm = model._tensors.ContainsKey("blk.0.attn_q_norm.weight"),
            TiedEmbeddings = tied || !model._tensors.ContainsKey("output.weight"),
        };
    }

    void FillMetadata(string dir)
    {
        _metadata["general.architecture"] = Config.Architecture;
        _metadata["general.name"] = System.IO.Path.GetFileName(System.IO.Path.GetFullPath(dir).TrimEnd(System.IO.Path.DirectorySeparatorChar));
        string tokenizerConfig = System.IO.Path.Combine(dir, "tokenizer_config.json");
        if (File.Exists(tokenizerConfig))
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerConfig));
            if (doc.RootElement.TryGetProperty("chat_template", out var tpl) && tpl.ValueKind == JsonValueKind.String)
                _metadata["tokenizer.chat_template"] = tpl.GetString()!;
        }
    }

    public override void Dispose()
    {
        foreach (var shard in _shards) shard.Dispose();
        _shards.Clear();
    }
}
