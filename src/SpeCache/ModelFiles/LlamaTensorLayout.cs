using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.ModelFiles;

/// <summary>
/// The tensors a Llama-family model must have, in GGUF naming and ggml shape order
/// (<c>Shape[0]</c> is the row length, i.e. the input width of a matrix), and the check that an
/// opened file has them.
/// </summary>
public static class LlamaTensorLayout
{
    /// <summary>Every tensor the forward pass reads, with its expected shape.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Required(ModelConfig c)
    {
        yield return ("token_embd.weight", [c.Dim, c.VocabSize]);
        yield return ("output_norm.weight", [c.Dim]);
        if (!c.TiedEmbeddings)
            yield return ("output.weight", [c.Dim, c.VocabSize]);
        for (int layer = 0; layer < c.LayerCount; layer++)
        {
            string blk = $"blk.{layer}.";
            yield return (blk + "attn_norm.weight", [c.Dim]);
            yield return (blk + "attn_q.weight", [c.Dim, c.QDim]);
            yield return (blk + "attn_k.weight", [c.Dim, c.KvDim]);
            yield return (blk + "attn_v.weight", [c.Dim, c.KvDim]);
            yield return (blk + "attn_output.weight", [c.QDim, c.Dim]);
            if (c.HasQkvBias)
            {
                yield return (blk + "attn_q.bias", [c.QDim]);
                yield return (blk + "attn_k.bias", [c.KvDim]);
                yield return (blk + "attn_v.bias", [c.KvDim]);
            }
            if (c.HasQkNorm)
            {
                yield return (blk + "attn_q_norm.weight", [c.HeadDim]);
                yield return (blk + "attn_k_norm.weight", [c.HeadDim]);
            }
            yield return (blk + "ffn_norm.weight", [c.Dim]);
            yield return (blk + "ffn_gate.weight", [c.Dim, c.HiddenDim]);
            yield return (blk + "ffn_up.weight", [c.Dim, c.HiddenDim]);
            yield return (blk + "ffn_down.weight", [c.HiddenDim, c.Dim]);
        }
    }

    /// <summary>Llama 3.1 frequency divisors, one per rotated pair; optional.</summary>
    public const string RopeFreqs = "rope_freqs.weight";

    /// <summary>
    /// Throws a one-line error for the first required tensor that is missing, has another shape, or
    /// has a type our kernels cannot compute with.
    /// </summary>
    public static void Validate(ModelConfig config, IReadOnlyDictionary<string, WeightTensor> tensors)
    {
        foreach (var (name, shape) in Required(config))
        {
            if (!tensors.TryGetValue(name, out var tensor))
                throw new InvalidDataException($"tensor '{name}' is missing (expected shape {Describe(shape)})");
            Check(tensor, shape);
        }
        if (tensors.TryGetValue(RopeFreqs, out var freqs))
        {
            Check(freqs, [config.RopeDim / 2]);
            if (freqs.Type != GgmlType.F32)
                throw new InvalidDataException($"tensor '{RopeFreqs}' has type {GgmlTypeInfo.Name(freqs.Type)}, expected F32");
        }
    }

    static void Check(WeightTensor tensor, long[] expected)
    {
        if (!tensor.Shape.AsSpan().SequenceEqual(expected))
            throw new InvalidDataException($"tensor '{tensor.Name}' has shape {Describe(tensor.Shape)}, expected {Describe(expected)}");
        if (!GgmlTypeInfo.IsSupportedWeight(tensor.Type))
            throw new NotSupportedException($"tensor '{tensor.Name}' has type {GgmlTypeInfo.Name(tensor.Type)}, which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
    }

    public static string Describe(long[] shape) => $"[{string.Join(", ", shape)}]";
}
