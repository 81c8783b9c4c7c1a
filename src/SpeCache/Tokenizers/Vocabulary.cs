using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>GGUF's tokenizer.ggml.token_type values (llama.cpp's llama_token_type).</summary>
public enum TokenType
{
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>
/// Everything a tokenizer knows about its tokens: text, score, type, the special ids and the
/// flags that steer encoding and decoding. Shared by the SPM and BPE tokenizers.
/// </summary>
public sealed class Vocabulary
{
    public string[] Tokens { get; }
    public float[] Scores { get; }
    public TokenType[] Types { get; }
    public int Bos { get; init; } = -1;
    public int Eos { get; init; } = -1;
    public int Unk { get; init; } = -1;
    public int Pad { get; init; } = -1;
    public int Eot { get; init; } = -1;
    public int Eom { get; init; } = -1;
    public bool AddBos { get; init; }
    public bool AddEos { get; init; }
    /// <summary>SPM: prepend a space ("▁") to text that starts the prompt or follows a special token.</summary>
    public bool AddSpacePrefix { get; init; }

    readonly Dictionary<string, int> ids;

    public Vocabulary(string[] tokens, float[]? scores, TokenType[]? types)
    {
        if (scores != null && scores.Length != tokens.Length)
            throw new InvalidDataException($"tokenizer has {tokens.Length} tokens but {scores.Length} scores");
        if (types != null && types.Length != tokens.Length)
            throw new InvalidDataException($"tokenizer has {tokens.Length} tokens but {types.Length} token types");
        Tokens = tokens;
        Scores = scores ?? new float[tokens.Length];
        if (types == null)
        {
            types = new TokenType[tokens.Length];
            Array.Fill(types, TokenType.Normal);
        }
        Types = types;
        ids = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        // Like llama.cpp's token_to_id map, the first id wins for duplicated texts.
        for (int i = 0; i < tokens.Length; i++)
            ids.TryAdd(tokens[i], i);
    }

    public int Count => Tokens.Length;

    public int Find(string text) => ids.TryGetValue(text, out var id) ? id : -1;

    public bool TryFind(ReadOnlySpan<char> text, out int id) =>
        ids.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(text, out id);

    public bool IsValid(int token) => (uint)token < (uint)Tokens.Length;

    /// <summary>Token texts that llama.cpp treats as end of generation whatever their type says.</summary>
    static readonly string[] EndOfGenerationTexts =
    [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
        "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
        "<｜end▁of▁sentence｜>",
    ];

    HashSet<int>? endOfGeneration;

    /// <summary>eos, eot, eom and the end-looking tokens llama.cpp adds to its special_eog_ids.</summary>
    public HashSet<int> EndOfGeneration
    {
        get
        {
            if (endOfGeneration != null)
                return endOfGeneration;
            var set = new HashSet<int>();
            foreach (var id in new[] { Eos, Eot, Eom })
                if (IsValid(id))
                    set.Add(id);
            foreach (var text in EndOfGenerationTexts)
                if (ids.TryGetValue(text, out var id))
                    set.Add(id);
            return endOfGeneration = set;
        }
    }

    (string Text, int Id)[]? specialTokens;

    /// <summary>
    /// Control, user-defined and unknown tokens, longest text first: the order llama.cpp's
    /// cache_special_tokens gives tokenizer_st_partition, so the longest match wins.
    /// </summary>
    public (string Text, int Id)[] SpecialTokens
    {
        get
        {
            if (specialTokens != null)
                return specialTokens;
            var list = new List<(string, int)>();
            for (int i = 0; i < Tokens.Length; i++)
                if (Types[i] is TokenType.Control or TokenType.UserDefined or TokenType.Unknown && Tokens[i].Length > 0)
                    list.Add((Tokens[i], i));
            list.Sort((a, b) => b.Item1.Length != a.Item1.Length ? b.Item1.Length.CompareTo(a.Item1.Length) : a.Item2.CompareTo(b.Item2));
            return specialTokens = list.ToArray();
        }
    }

    /// <summary>The tokenizer.ggml.* keys shared by every vocabulary type.</summary>
    internal Dictionary<string, object> ToGgufMetadata(string model, string? pre)
    {
        var types = new int[Types.Length];
        for (int i = 0; i < types.Length; i++)
            types[i] = (int)Types[i];
        var meta = new Dictionary<string, object>
        {
            ["tokenizer.ggml.model"] = model,
            ["tokenizer.ggml.tokens"] = (string[])Tokens.Clone(),
            ["tokenizer.ggml.scores"] = (float[])Scores.Clone(),
            ["tokenizer.ggml.token_type"] = types,
            ["tokenizer.ggml.add_bos_token"] = AddBos,
            ["tokenizer.ggml.add_eos_token"] = AddEos,
            ["tokenizer.ggml.add_space_prefix"] = AddSpacePrefix,
        };
        if (pre != null)
            meta["tokenizer.ggml.pre"] = pre;
        if (IsValid(Bos)) meta["tokenizer.ggml.bos_token_id"] = (uint)Bos;
        if (IsValid(Eos)) meta["tokenizer.ggml.eos_token_id"] = (uint)Eos;
        if (IsValid(Unk)) meta["tokenizer.ggml.unknown_token_id"] = (uint)Unk;
        if (IsValid(Pad)) meta["tokenizer.ggml.padding_token_id"] = (uint)Pad;
        return meta;
    }

    internal static string Utf8(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);
}
