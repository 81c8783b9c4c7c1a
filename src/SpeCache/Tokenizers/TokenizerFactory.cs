using SpeCache.ModelFiles;

namespace SpeCache.Tokenizers;

/// <summary>Builds a tokenizer from GGUF tokenizer.ggml.* metadata, with llama.cpp's defaults.</summary>
public static class TokenizerFactory
{
    /// <summary>
    /// tokenizer.ggml.model "llama" gives an <see cref="SpmTokenizer"/>, "gpt2" a byte-level
    /// <see cref="BpeTokenizer"/>; anything else is not supported.
    /// </summary>
    public static TokenizerBase FromGgufMetadata(IReadOnlyDictionary<string, object> metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        string model = metadata.GetString("tokenizer.ggml.model");
        if (model is not ("llama" or "gpt2"))
            throw new NotSupportedException($"unsupported tokenizer.ggml.model '{model}' (supported: llama, gpt2)");
        bool spm = model == "llama";

        var tokens = metadata.GetArray<string>("tokenizer.ggml.tokens");
        metadata.TryGetArray<float>("tokenizer.ggml.scores", out var scores);
        var types = ReadTokenTypes(metadata, tokens.Length);
        PreTokenizer? pre = null;
        if (!spm)
        {
            metadata.TryGetString("tokenizer.ggml.pre", out var preName);
            pre = PreTokenizer.FromGgufName(preName);
        }

        // llama.cpp's defaults when a key is absent: SPM has bos 1, eos 2, unk 0 and adds BOS and a
        // space prefix; GPT-2 BPE has bos = eos = 11 and adds BOS only for the Llama 3 pre-tokenizer.
        var vocab = new Vocabulary(tokens, scores.Length == 0 ? null : scores, types)
        {
            Bos = Id(metadata, "tokenizer.ggml.bos_token_id", spm ? 1 : 11, tokens.Length),
            Eos = Id(metadata, "tokenizer.ggml.eos_token_id", spm ? 2 : 11, tokens.Length),
            Unk = Id(metadata, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, tokens.Length),
            Pad = Id(metadata, "tokenizer.ggml.padding_token_id", -1, tokens.Length),
            Eot = Id(metadata, "tokenizer.ggml.eot_token_id", -1, tokens.Length),
            Eom = Id(metadata, "tokenizer.ggml.eom_token_id", -1, tokens.Length),
            AddBos = metadata.TryGetBool("tokenizer.ggml.add_bos_token", out var addBos) ? addBos : spm || pre!.Name == "llama-bpe",
            AddEos = metadata.TryGetBool("tokenizer.ggml.add_eos_token", out var addEos) && addEos,
            AddSpacePrefix = spm && (!metadata.TryGetBool("tokenizer.ggml.add_space_prefix", out var prefix) || prefix),
        };
        if (spm)
            return new SpmTokenizer(vocab);
        var merges = metadata.GetArray<string>("tokenizer.ggml.merges");
        return BpeTokenizer.ByteLevelBpe(vocab, merges, pre!);
    }

    static TokenType[]? ReadTokenTypes(IReadOnlyDictionary<string, object> metadata, int count)
    {
        if (!metadata.TryGetValue("tokenizer.ggml.token_type", out var raw))
            return null;
        var types = new TokenType[count];
        switch (raw)
        {
            case int[] ints when ints.Length == count:
                for (int i = 0; i < count; i++) types[i] = (TokenType)ints[i];
                break;
            case uint[] uints when uints.Length == count:
                for (int i = 0; i < count; i++) types[i] = (TokenType)uints[i];
                break;
            default:
                throw new InvalidDataException($"metadata 'tokenizer.ggml.token_type' must be an i32 array of {count} entries");
        }
        return types;
    }

    static int Id(IReadOnlyDictionary<string, object> metadata, string key, int fallback, int count)
    {
        if (!metadata.TryGetInt64(key, out var id))
            return fallback < count ? fallback : -1;
        // llama.cpp maps out-of-range ids to "none" too (with a warning); -1 (u32 max) means none.
        return id >= 0 && id < count ? (int)id : -1;
    }
}
