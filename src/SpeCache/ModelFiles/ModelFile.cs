using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.ModelFiles;

/// <summary>
/// A model on disk, opened: its shape, its weights (named as in GGUF: <c>token_embd.weight</c>,
/// <c>blk.0.attn_q.weight</c>, ...), and the metadata a tokenizer and chat template are built from.
/// Every reader (GGUF, safetensors, llama2.c) produces one of these; the rest of the engine never
/// knows which format a model came from. Disposing it unmaps the weights.
/// </summary>
public abstract class ModelFile : IDisposable
{
    public abstract string Path { get; }
    /// <summary>"gguf", "safetensors" or "llama2c".</summary>
    public abstract string Format { get; }
    public abstract ModelConfig Config { get; }
    public abstract IReadOnlyDictionary<string, WeightTensor> Tensors { get; }

    /// <summary>GGUF-style metadata (keys like <c>tokenizer.ggml.tokens</c>); readers of other formats fill what they can.</summary>
    public abstract IReadOnlyDictionary<string, object> Metadata { get; }

    public WeightTensor Tensor(string name) =>
        Tensors.TryGetValue(name, out var t) ? t : throw new InvalidDataException($"model file is missing tensor '{name}'");

    public WeightTensor? TryTensor(string name) => Tensors.TryGetValue(name, out var t) ? t : null;

    public abstract void Dispose();
}
