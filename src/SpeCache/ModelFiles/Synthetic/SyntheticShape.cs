using SpeCache.Transformer;

namespace SpeCache.ModelFiles.Synthetic;

/// <summary>
/// The shape of a real model, by the name <c>specache make-model --shape</c> takes: everything that
/// decides compute and memory traffic (widths, heads, layers, vocabulary, RoPE, biases, tied head),
/// none of the trained weights.
/// </summary>
public sealed record SyntheticShape(string Name, ModelConfig Config)
{
    /// <summary>Llama 3 "llama3" RoPE scaling as Llama 3.1 and 3.2 ship it.</summary>
    static readonly Llama3RopeScaling Llama31Scaling = new(Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContextLength: 8192);

    public static IReadOnlyList<SyntheticShape> All { get; } =
    [
        new("llama-3.2-1b", new ModelConfig
        {
            Architecture = "llama", VocabSize = 128256, Dim = 2048, HiddenDim = 8192, LayerCount = 16,
            HeadCount = 32, KvHeadCount = 8, HeadDim = 64, RopeDim = 64, ContextLength = 131072,
            RmsNormEps = 1e-5f, RopeTheta = 500000f, RopeScaling = Llama31Scaling, TiedEmbeddings = true,
        }),
        new("qwen2.5-0.5b", new ModelConfig
        {
            Architecture = "qwen2", VocabSize = 151936, Dim = 896, HiddenDim = 4864, LayerCount = 24,
            HeadCount = 14, KvHeadCount = 2, HeadDim = 64, RopeDim = 64, ContextLength = 32768,
            RmsNormEps = 1e-6f, RopeTheta = 1000000f, RopeLayout = RopeLayout.NeoX, HasQkvBias = true, TiedEmbeddings = true,
        }),
        new("llama-3-8b", new ModelConfig
        {
            Architecture = "llama", VocabSize = 128256, Dim = 4096, HiddenDim = 14336, LayerCount = 32,
            HeadCount = 32, KvHeadCount = 8, HeadDim = 128, RopeDim = 128, ContextLength = 8192,
            RmsNormEps = 1e-5f, RopeTheta = 500000f,
        }),
        new("llama-3.1-8b", new ModelConfig
        {
            Architecture = "llama", VocabSize = 128256, Dim = 4096, HiddenDim = 14336, LayerCount = 32,
            HeadCount = 32, KvHeadCount = 8, HeadDim = 128, RopeDim = 128, ContextLength = 131072,
            RmsNormEps = 1e-5f, RopeTheta = 500000f, RopeScaling = Llama31Scaling,
        }),
        // Not a real model: the Llama 3.2 features (GQA, llama3 RoPE scaling, tied head) at a size
        // that tests and quick trials make in well under a second.
        new("tiny-llama", new ModelConfig
        {
            Architecture = "llama", VocabSize = 1024, Dim = 256, HiddenDim = 768, LayerCount = 2,
            HeadCount = 4, KvHeadCount = 2, HeadDim = 64, RopeDim = 64, ContextLength = 4096,
            RmsNormEps = 1e-5f, RopeTheta = 500000f, RopeScaling = Llama31Scaling, TiedEmbeddings = true,
        }),
    ];

    public static IEnumerable<string> Names => All.Select(s => s.Name);

    public static SyntheticShape Find(string name) =>
        All.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown shape '{name}' (available: {string.Join(", ", Names)})");
}
