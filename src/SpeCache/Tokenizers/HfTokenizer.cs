using System.Text.Json;

namespace SpeCache.Tokenizers;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> (with <c>tokenizer_config.json</c> for BOS/EOS and flags):
/// BPE models, either byte-level (Llama 3, Qwen2: the pre-tokenizer regex is taken from the file)
/// or SentencePiece-style with byte fallback (Llama 2 and the TinyStories models).
/// </summary>
public sealed class HfTokenizer
{
    HfTokenizer(Vocabulary vocabulary, string[] merges, string? pattern, bool byteLevel, bool ignoreMerges)
    {
        Vocabulary = vocabulary;
        Merges = merges;
        Pattern = pattern;
        ByteLevel = byteLevel;
        IgnoreMerges = ignoreMerges;
    }

    public Vocabulary Vocabulary { get; }
    public string[] Merges { get; }
    public string? Pattern { get; }
    public bool ByteLevel { get; }
    public bool IgnoreMerges { get; }

    public static ITokenizer Load(string tokenizerJson, string? tokenizerConfig = null) => Read(tokenizerJson, tokenizerConfig).Create();

    public ITokenizer Create() => new BpeTokenizer(Vocabulary, Merges, Pattern, ByteLevel, IgnoreMerges);

    public static HfTokenizer Read(string tokenizerJson, string? tokenizerConfig = null)
    {
        if (!File.Exists(tokenizerJson)) throw new FileNotFoundException($"tokenizer not found: {tokenizerJson}", tokenizerJson);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJson));
            using var config = tokenizerConfig != null && File.Exists(tokenizerConfig) ? JsonDocument.Parse(File.ReadAllBytes(tokenizerConfig)) : null;
            return Read(doc.RootElement, config?.RootElement, tokenizerJson);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{tokenizerJson}: not valid JSON ({e.Message})");
        }
        catch (KeyNotFoundException e)
        {
            throw new InvalidDataException($"{tokenizerJson}: missing field ({e.Message})");
        }
    }

    static HfTokenizer Read(JsonElement root, JsonElement? config, string path)
    {
        var model = root.GetProperty("model");
        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "BPE";
        if (type != "BPE") throw new NotSupportedException($"{path}: tokenizer model '{type}' is not supported (supported: BPE)");

        var byId = new SortedDictionary<int, string>();
        foreach (var entry in model.GetProperty("vocab").EnumerateObject()) byId[entry.Value.GetInt32()] = entry.Name;
        var special = new Dictionary<int, bool>();
        if (root.TryGetProperty("added_tokens", out var added))
            foreach (var token in added.EnumerateArray())
            {
                int id = token.GetProperty("id").GetInt32();
                byId[id] = token.GetProperty("content").GetString()!;
                special[id] = token.TryGetProperty("special", out var sp) && sp.GetBoolean();
            }
        int count = byId.Count == 0 ? 0 : byId.Keys.Max() + 1;
        var tokens = new string[count];
        var types = new TokenType[count];
        for (int i = 0; i < count; i++)
        {
            tokens[i] = byId.TryGetValue(i, out var text) ? text : $"[PAD{i}]";
            types[i] = !byId.ContainsKey(i) ? TokenType.Unused
                : special.TryGetValue(i, out bool isSpecial) ? (isSpecial ? TokenType.Control : TokenType.UserDefined)
                : text!.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text.EndsWith('>') ? TokenType.Byte
                : TokenType.Normal;
        }

        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var m))
            foreach (var merge in m.EnumerateArray())
                merges.Add(merge.ValueKind == JsonValueKind.Array ? $"{merge[0].GetString()} {merge[1].GetString()}" : merge.GetString()!);

        string? pattern = null;
        bool byteLevel = false;
        bool spacePrefix = false;
        void Visit(JsonElement? node)
        {
            if (node is not { ValueKind: JsonValueKind.Object } n) return;
            string kind = n.TryGetProperty("type", out var k) ? k.GetString() ?? "" : "";
            switch (kind)
            {
                case "Sequence":
                    foreach (var key in new[] { "pretokenizers", "normalizers" })
                        if (n.TryGetProperty(key, out var list))
                            foreach (var child in list.EnumerateArray()) Visit(child);
                    break;
                case "Split" when n.TryGetProperty("pattern", out var p) && p.TryGetProperty("Regex", out var regex):
                    pattern = regex.GetString();
                    break;
                case "ByteLevel":
                    byteLevel = true;
                    break;
                case "Prepend" when n.TryGetProperty("prepend", out var pre) && pre.GetString() == "\u2581":
                    spacePrefix = true;
                    break;
                case "Metaspace":
                    spacePrefix = !n.TryGetProperty("prepend_scheme", out var scheme) || scheme.GetString() != "never";
                    break;
            }
        }
        Visit(root.TryGetProperty("normalizer", out var normalizer) ? normalizer : null);
        Visit(root.TryGetProperty("pre_tokenizer", out var preTokenizer) ? preTokenizer : null);
        if (byteLevel && pattern == null) pattern = BpeTokenizer.Gpt2Pattern;

        int Find(string? text) => text == null ? -1 : Array.IndexOf(tokens, text);
        string? ConfigToken(string key)
        {
            if (config is not { } c || !c.TryGetProperty(key, out var v)) return null;
            return v.ValueKind == JsonValueKind.String ? v.GetString() : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var content) ? content.GetString() : null;
        }
        bool ConfigFlag(string key, bool fallback) =>
            config is { } c && c.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

        int bos = Find(ConfigToken("bos_token"));
        int eos = Find(ConfigToken("eos_token"));
        var vocabulary = new Vocabulary(tokens, null, types)
        {
            Bos = bos,
            Eos = eos,
            Unknown = Find(ConfigToken("unk_token") ?? (model.TryGetProperty("unk_token", out var unk) ? unk.GetString() : null)),
            Padding = Find(ConfigToken("pad_token")),
            AddBos = ConfigFlag("add_bos_token", bos >= 0 && PostProcessorAddsBos(root, tokens[bos])),
            AddEos = ConfigFlag("add_eos_token", false),
            AddSpacePrefix = !byteLevel && spacePrefix,
        };
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        return new HfTokenizer(vocabulary, merges.ToArray(), byteLevel ? pattern : null, byteLevel, ignoreMerges);
    }

    /// <summary>Whether the post-processor's template puts <paramref name="bos"/> in front (when tokenizer_config.json does not say).</summary>
    static bool PostProcessorAddsBos(JsonElement root, string bos) =>
        root.TryGetProperty("post_processor", out var pp) && pp.ValueKind == JsonValueKind.Object
        && pp.GetRawText().Replace(" ", "", StringComparison.Ordinal).Contains($"\"id\":\"{bos}\"", StringComparison.Ordinal);

    /// <summary>
    /// This tokenizer as GGUF metadata that llama.cpp loads and tokenizes identically. Byte-level BPE
    /// is written as a <c>gpt2</c> vocabulary with its merges. SentencePiece-style BPE is written as
    /// a <c>llama</c> (SPM) vocabulary whose scores reproduce the merge order: a token made by merge
    /// rank r scores -r, so SPM's "highest score first" merges exactly as BPE's "lowest rank first".
    /// </summary>
    public Dictionary<string, object> ToGgufMetadata()
    {
        if (ByteLevel)
        {
            string pre = Pattern == null ? "gpt-2"
                : Pattern.Contains(@"\p{N}{1,3}", StringComparison.Ordinal) ? "llama-bpe"
                : Pattern.Contains(@"\p{N}|", StringComparison.Ordinal) ? "qwen2"
                : "gpt-2";
            return Vocabulary.ToGgufMetadata("gpt2", pre, Merges);
        }
        var scores = new float[Vocabulary.Count];
        var created = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int r = 0; r < Merges.Length; r++)
        {
            string joined = Merges[r].Replace(" ", "", StringComparison.Ordinal);
            created.TryAdd(joined, r);
        }
        for (int i = 0; i < Vocabulary.Count; i++)
        {
            string text = Vocabulary.Tokens[i];
            scores[i] = created.TryGetValue(text, out int rank) ? -rank
                : text.Length <= 1 || Vocabulary.Types[i] != TokenType.Normal ? 0f
                : -1e6f; // a multi-character token no merge makes: let SPM reach it last
        }
        var spm = new Vocabulary(Vocabulary.Tokens, scores, Vocabulary.Types)
        {
            Bos = Vocabulary.Bos,
            Eos = Vocabulary.Eos,
            Unknown = Vocabulary.Unknown,
            Padding = Vocabulary.Padding,
            AddBos = Vocabulary.AddBos,
            AddEos = Vocabulary.AddEos,
            AddSpacePrefix = Vocabulary.AddSpacePrefix,
        };
        return spm.ToGgufMetadata("llama");
    }
}
