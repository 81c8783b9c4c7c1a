namespace SpeCache.Tokenizers;

/// <summary>Token types as GGUF stores them in <c>tokenizer.ggml.token_type</c>.</summary>
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
/// A vocabulary: the token strings with their scores and types, the special ids, and the flags a
/// tokenizer needs. Both tokenizer algorithms (SPM and BPE) and both directions (text to ids, ids to
/// text) read from this one table; it also writes itself as GGUF <c>tokenizer.ggml.*</c> metadata.
/// </summary>
public sealed class Vocabulary
{
    readonly Dictionary<string, int> _ids;

    public Vocabulary(string[] tokens, float[]? scores, TokenType[]? types)
    {
        if (tokens.Length == 0) throw new InvalidDataException("the vocabulary is empty");
        Tokens = tokens;
        Scores = scores ?? new float[tokens.Length];
        Types = types ?? Enumerable.Repeat(TokenType.Normal, tokens.Length).ToArray();
        if (Scores.Length != tokens.Length || Types.Length != tokens.Length)
            throw new InvalidDataException($"vocabulary arrays disagree: {tokens.Length} tokens, {Scores.Length} scores, {Types.Length} types");
        _ids = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
            _ids.TryAdd(tokens[i], i); // the first of duplicate strings wins, as in llama.cpp
    }

    public string[] Tokens { get; }
    public float[] Scores { get; }
    public TokenType[] Types { get; }
    public int Count => Tokens.Length;

    public int Bos { get; init; } = -1;
    public int Eos { get; init; } = -1;
    public int Unknown { get; init; } = -1;
    public int Padding { get; init; } = -1;
    public bool AddBos { get; init; }
    public bool AddEos { get; init; }
    /// <summary>SPM: a space is put before the text so that the first word tokenizes like the rest.</summary>
    public bool AddSpacePrefix { get; init; } = true;

    public int Find(string text) => _ids.TryGetValue(text, out int id) ? id : -1;

    public bool IsControl(int id) => Types[id] == TokenType.Control;

    /// <summary>
    /// Tokens that end generation: EOS, plus control tokens whose text llama.cpp also treats as an
    /// end of turn (&lt;|eot_id|&gt;, &lt;|im_end|&gt;, &lt;|end|&gt;, &lt;|endoftext|&gt;, &lt;|eom_id|&gt;, ...).
    /// </summary>
    public HashSet<int> EndOfGeneration()
    {
        var set = new HashSet<int>();
        if (Eos >= 0) set.Add(Eos);
        string[] names = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|eom_id|>", "<end_of_turn>", "<|end_of_text|>", "</s>", "<|return|>"];
        foreach (var name in names)
        {
            int id = Find(name);
            if (id >= 0 && (Types[id] is TokenType.Control or TokenType.UserDefined || id == Eos)) set.Add(id);
        }
        return set;
    }

    /// <summary>This vocabulary as GGUF tokenizer metadata (the keys llama.cpp reads).</summary>
    public Dictionary<string, object> ToGgufMetadata(string model, string? pre = null, string[]? merges = null)
    {
        var metadata = new Dictionary<string, object>
        {
            ["tokenizer.ggml.model"] = model,
            ["tokenizer.ggml.tokens"] = Tokens,
            ["tokenizer.ggml.scores"] = Scores,
            ["tokenizer.ggml.token_type"] = Types.Select(t => (int)t).ToArray(),
            ["tokenizer.ggml.add_bos_token"] = AddBos,
            ["tokenizer.ggml.add_eos_token"] = AddEos,
        };
        if (model == "llama") metadata["tokenizer.ggml.add_space_prefix"] = AddSpacePrefix;
        if (pre != null) metadata["tokenizer.ggml.pre"] = pre;
        if (merges != null) metadata["tokenizer.ggml.merges"] = merges;
        if (Bos >= 0) metadata["tokenizer.ggml.bos_token_id"] = (uint)Bos;
        if (Eos >= 0) metadata["tokenizer.ggml.eos_token_id"] = (uint)Eos;
        if (Unknown >= 0) metadata["tokenizer.ggml.unknown_token_id"] = (uint)Unknown;
        if (Padding >= 0) metadata["tokenizer.ggml.padding_token_id"] = (uint)Padding;
        return metadata;
    }
}
