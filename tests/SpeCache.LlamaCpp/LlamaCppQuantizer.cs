using SpeCache.LlamaCpp.Native;

namespace SpeCache.LlamaCpp;

/// <summary>llama.cpp's own GGUF quantizer (what the llama-quantize tool calls), for reference files.</summary>
public static unsafe class LlamaCppQuantizer
{
    /// <summary>Writes <paramref name="output"/>: <paramref name="input"/> (F32/F16/BF16 weights) quantized to <paramref name="ftype"/>.</summary>
    /// <param name="threads">Worker threads; 0 lets llama.cpp use every hardware thread.</param>
    /// <remarks>
    /// llama.cpp's defaults otherwise: the output and token-embedding tensors get the type its mixing rules
    /// pick for the ftype (e.g. Q6_K output for Q4_K_M), 1-d tensors stay F32, no importance matrix.
    /// </remarks>
    public static void Quantize(string input, string output, LlamaFtype ftype, int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        if (!File.Exists(input))
            throw new FileNotFoundException("model file not found", input);
        LlamaCppRuntime.EnsureInitialized();
        var parameters = LlamaNative.llama_model_quantize_default_params();
        parameters.Ftype = ftype;
        parameters.NThread = threads;
        var mark = LlamaCppRuntime.LogPosition;
        var rc = LlamaNative.llama_model_quantize(input, output, &parameters);
        if (rc != 0)
            throw LlamaCppRuntime.Failure($"llama_model_quantize({input} -> {output}, {ftype}) returned {rc}", mark);
    }
}
