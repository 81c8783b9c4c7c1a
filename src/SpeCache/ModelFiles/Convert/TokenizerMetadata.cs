using SpeCache.ModelFiles.Llama2c;
using SpeCache.ModelFiles.Safetensors;
using SpeCache.Tokenizers;

namespace SpeCache.ModelFiles.Conversion;

/// <summary>The GGUF tokenizer metadata for a model whose format keeps its tokenizer apart from the weights.</summary>
public static class TokenizerMetadata
{
    /// <param name="tokenizerPath">llama2.c: the tokenizer .bin (found beside the checkpoint when null).</param>
    public static IReadOnlyDictionary<string, object> For(ModelFile source, string? tokenizerPath = null) => source switch
    {
        Llama2cModelFile => Llama2cTokenizer.Load(tokenizerPath ?? Llama2cModelFile.FindTokenizer(source.Path)).ToGgufMetadata(),
        SafetensorsModelFile hf => HfTokenizer.Load(
            tokenizerPath ?? Path.Combine(hf.Directory, "tokenizer.json"),
            File.Exists(Path.Combine(hf.Directory, "tokenizer_config.json")) ? Path.Combine(hf.Directory, "tokenizer_config.json") : null).ToGgufMetadata(),
        _ => new Dictionary<string, object>(), // GGUF sources carry theirs in their metadata
    };
}
