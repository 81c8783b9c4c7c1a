using SpeCache.ModelFiles;

namespace SpeCache.Tokenizers;

/// <summary>Builds the tokenizer a GGUF file describes in its <c>tokenizer.ggml.*</c> metadata.</summary>
public static class TokenizerFactory
{
    public static ITokenizer FromGgufMetadata(IReadOnlyDictionary<string, object> metadata)
    {
        if (!metadata.TryGetString("tokenizer.ggml.model", out string model))
            throw new InvalidDataException("the model file has no tokenizer (tokenizer.ggml.model is missing)");
        string[] tokens = metadata.GetArray<string>("tokenizer.ggml.tokens");
        float[]? scores = metadata.TryGetArray<float>("tokenizer.ggml.scores", out var s) ? s : null;
        TokenType[]? types = metadata.TryGetArray<int>("tokenizer.ggml.token_type", out var t) ? t.Select(v => (TokenType)v).ToArray() : null;
        int Id(string key) => metadata.TryGetInt64(key, out long v) && v >= 0 && v < tokens.Length ? (int)v : -1;
        bool Flag(string key, bool fallback) => metadata.TryGetBool(key, out bool v) ? v : fallback;

        switch (model)
        {
            case "llama":
                return new SentencePieceTokenizer(new Vocabulary(tokens, scores, types)
                {
                    Bos = Id("tokenizer.ggml.bos_token_id") is int b and >= 0 ? b : 1,
                    Eos = Id("tokenizer.ggml.eos_token_id") is int e and >= 0 ? e : 2,
                    Unknown = Id("tokenizer.ggml.unknown_token_id") is int u and >= 0 ? u : 0,
                    Padding = Id("tokenizer.ggml.padding_token_id"),
                    AddBos = Flag("tokenizer.ggml.add_bos_token", true),
                    AddEos = Flag("tokenizer.ggml.add_eos_token", false),
                    AddSpacePrefix = Flag("tokenizer.ggml.add_space_prefix", true),
                });
            case "gpt2":
                {
                    string pre = metadata.TryGetString("tokenizer.ggml.pre", out string p) ? p : "default";
                    string pattern = pre switch
                    {
                        "llama3" or "llama-bpe" or "smaug-bpe" => BpeTokenizer.Llama3Pattern,
                        "qwen2" => BpeTokenizer.Qwen2Pattern,
                        "gpt-2" or "default" => BpeTokenizer.Gpt2Pattern,
                        _ => throw new NotSupportedException($"pre-tokenizer '{pre}' is not supported (supported: llama-bpe, llama3, qwen2, gpt-2, default)"),
                    };
                    var vocabulary = new Vocabulary(tokens, scores, types)
                    {
                        Bos = Id("tokenizer.ggml.bos_token_id"),
                        Eos = Id("tokenizer.ggml.eos_token_id"),
                        Unknown = Id("tokenizer.ggml.unknown_token_id"),
                        Padding = Id("tokenizer.ggml.padding_token_id"),
                        // llama.cpp's default for BPE vocabularies is to add BOS unless the file says otherwise.
                        AddBos = Flag("tokenizer.ggml.add_bos_token", true),
                        AddEos = Flag("tokenizer.ggml.add_eos_token", false),
                        AddSpacePrefix = false,
                    };
                    string[] merges = metadata.TryGetArray<string>("tokenizer.ggml.merges", out var m) ? m : [];
                    return new BpeTokenizer(vocabulary, merges, pattern, byteLevel: true, ignoreMerges: pre is "llama3" or "llama-bpe");
                }
            default:
                throw new NotSupportedException($"tokenizer model '{model}' is not supported (supported: llama, gpt2)");
        }
    }
}
