namespace SpeCache.Transformer;

/// <summary>How the two halves of each rotated pair are laid out inside a head.</summary>
public enum RopeLayout
{
    /// <summary>Pairs are adjacent: (0,1), (2,3), ... (GGUF <c>llama</c>, llama2.c, Meta checkpoints).</summary>
    Interleaved,

    /// <summary>Pairs are half a head apart: (0,d/2), (1,d/2+1), ... (GPT-NeoX, Qwen, Hugging Face Llama weights).</summary>
    NeoX,
}

/// <summary>Llama 3.x "llama3" frequency scaling; null when the model uses plain RoPE.</summary>
public sealed record Llama3RopeScaling(float Factor, float LowFreqFactor, float HighFreqFactor, int OriginalContextLength);

/// <summary>Everything the forward pass needs to know about a Llama-family model's shape.</summary>
public sealed record ModelConfig
{
    /// <summary>GGUF architecture name: llama, mistral, qwen2, qwen3.</summary>
    public required string Architecture { get; init; }
    public required int VocabSize { get; init; }
    /// <summary>Residual stream width (n_embd).</summary>
    public required int Dim { get; init; }
    /// <summary>FFN inner width (n_ff).</summary>
    public required int HiddenDim { get; init; }
    public required int LayerCount { get; init; }
    public required int HeadCount { get; init; }
    public required int KvHeadCount { get; init; }
    /// <summary>Per-head width; Dim / HeadCount unless the file says otherwise (Qwen3).</summary>
    public required int HeadDim { get; init; }
    public required int ContextLength { get; init; }
    public float RmsNormEps { get; init; } = 1e-5f;
    public float RopeTheta { get; init; } = 10000f;
    /// <summary>How many leading dimensions of each head are rotated (usually all of them).</summary>
    public int RopeDim { get; init; }
    public RopeLayout RopeLayout { get; init; } = RopeLayout.Interleaved;
    public Llama3RopeScaling? RopeScaling { get; init; }
    /// <summary>Qwen2: Q, K and V projections carry a bias.</summary>
    public bool HasQkvBias { get; init; }
    /// <summary>Qwen3: per-head RMSNorm on Q and K before RoPE.</summary>
    public bool HasQkNorm { get; init; }
    /// <summary>The output head reuses the token embedding matrix.</summary>
    public bool TiedEmbeddings { get; init; }

    public int QueryGroupSize => HeadCount / KvHeadCount;
    public int QDim => HeadCount * HeadDim;
    public int KvDim => KvHeadCount * HeadDim;

    /// <summary>Throws a one-line error if the shape cannot be run.</summary>
    public void Validate()
    {
        void Require(bool ok, string what)
        {
            if (!ok) throw new InvalidDataException($"model config: {what}");
        }
        Require(VocabSize > 0 && Dim > 0 && HiddenDim > 0 && LayerCount > 0, "sizes must be positive");
        Require(HeadCount > 0 && KvHeadCount > 0 && HeadCount % KvHeadCount == 0,
            $"head count {HeadCount} is not a multiple of KV head count {KvHeadCount}");
        Require(HeadDim > 0 && HeadDim % 2 == 0, $"head dim {HeadDim} must be even");
        Require(RopeDim > 0 && RopeDim <= HeadDim && RopeDim % 2 == 0, $"rope dim {RopeDim} must be even and at most the head dim");
        Require(ContextLength > 0, "context length must be positive");
    }
}
