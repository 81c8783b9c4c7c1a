using System.Text.Json;

namespace SpeCache.Tokenizers;

/// <summary>
/// Hugging Face tokenizer.json (+ tokenizer_config.json) with a "BPE" model: either byte-level
/// (Llama 3, Qwen2: a Split regex and ByteLevel pre-tokenizer) or SentencePiece-style with byte
/// fallback and the Prepend("▁") / Replace(" ", "▁") normalizer (Llama 2 style, tinystories-656k).
/// </summary>
public static class HfTokenizer
{
    public static BpeTokenizer Load(string tokenizerJsonPath, string? tokenizerConfigPath)
    {
        using var json = Parse(tokenizerJsonPath);
        using var config = tokenizerConfigPath != null ? Parse(tokenizerConfigPath) : null;
        var root = json.RootElement;
        try
        {
            return Build(root, config?.RootElement);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new InvalidDataException($"{tokenizerJsonPath}: not a tokenizer.json this reader understands ({e.Message})");
        }
    }

    static JsonDocument Parse(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})");
        }
    }

    static BpeTokenizer Build(JsonElement root, JsonElement? config)
    {
        var model = root.GetProperty("model");
        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "BPE";
        if (type != "BPE")
            throw new NotSupportedException($"unsupported tokenizer.json model type '{type}' (supported: BPE)");

        // Token texts by id: the model's vocab plus added tokens, which may extend it.
        var byId = new Dictionary<int, string>();
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            byId[entry.Value.GetInt32()] = entry.Name;
        var special = new Dictionary<int, bool>();
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            foreach (var token in added.EnumerateArray())
            {
                int id = token.GetProperty("id").GetInt32();
                byId[id] = token.GetProperty("content").GetString()!;
                special[id] = token.TryGetProperty("special", out var s) && s.GetBoolean();
            }
        int count = 0;
        foreach (var id in byId.Keys)
        {
            if (id < 0)
                throw new InvalidDataException($"tokenizer.json has negative token id {id}");
            count = Math.Max(count, id + 1);
        }
        var tokens = new string[count];
        for (int i = 0; i < count; i++)
            tokens[i] = byId.TryGetValue(i, out var text) ? text : $"[PAD{i}]"; // llama.cpp's converter fills holes the same way

        string? unkText = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
        bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
        bool byteLevel = Mentions(root.TryGetProperty("pre_tokenizer", out var preJson) ? preJson : default, "ByteLevel")
            || Mentions(root.TryGetProperty("decoder", out var dec) ? dec : default, "ByteLevel");

        var types = new TokenType[count];
        for (int i = 0; i < count; i++)
        {
            if (special.TryGetValue(i, out var isSpecial))
                types[i] = isSpecial ? TokenType.Control : TokenType.UserDefined;
            else if (byteFallback && tokens[i].Length == 6 && tokens[i].StartsWith("<0x", StringComparison.Ordinal))
                types[i] = TokenType.Byte;
            else if (!byId.ContainsKey(i))
                types[i] = TokenType.Unused;
            else
                types[i] = TokenType.Normal;
            if (tokens[i] == unkText)
                types[i] = TokenType.Unknown;
        }

        var merges = ReadMerges(model.GetProperty("merges"));
        var lookup = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < count; i++)
            lookup.TryAdd(tokens[i], i);

        // BOS/EOS: tokenizer_config.json when it says, else the post-processor's template.
        int templateBos = TemplateFirstSpecial(root, lookup);
        int bos = ConfigToken(config, "bos_token", lookup) ?? templateBos;
        int eos = ConfigToken(config, "eos_token", lookup) ?? -1;
        int pad = ConfigToken(config, "pad_token", lookup) ?? -1;
        bool addBos = config is { } c && c.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? ab.GetBoolean()
            : templateBos >= 0;
        bool addEos = config is { } c2 && c2.TryGetProperty("add_eos_token", out var ae) && ae.ValueKind == JsonValueKind.True;
        int unk = unkText != null && lookup.TryGetValue(unkText, out var unkId) ? unkId : -1;

        if (byteLevel)
        {
            var vocab = new Vocabulary(tokens, null, types) { Bos = bos, Eos = eos, Pad = pad, Unk = unk, AddBos = addBos, AddEos = addEos };
            return BpeTokenizer.ByteLevelBpe(vocab, merges, DetectPreTokenizer(preJson));
        }

        bool prependsSpace = Mentions(root.TryGetProperty("normalizer", out var norm) ? norm : default, "Prepend");
        bool replacesSpace = Mentions(norm, "Replace");
        if (!replacesSpace)
            throw new NotSupportedException("unsupported tokenizer.json: BPE without ByteLevel or the \"▁\" Replace normalizer");
        var spmVocab = new Vocabulary(tokens, null, types)
        {
            Bos = bos,
            Eos = eos,
            Pad = pad,
            Unk = unk,
            AddBos = addBos,
            AddEos = addEos,
            AddSpacePrefix = prependsSpace,
        };
        return BpeTokenizer.SentencePieceBpe(spmVocab, merges);
    }

    /// <summary>Merges as "left right" strings (tokenizer.json has them as strings or, newer, as pairs).</summary>
    static string[] ReadMerges(JsonElement merges)
    {
        var result = new string[merges.GetArrayLength()];
        int i = 0;
        foreach (var merge in merges.EnumerateArray())
            result[i++] = merge.ValueKind == JsonValueKind.Array
                ? merge[0].GetString() + " " + merge[1].GetString()
                : merge.GetString() ?? throw new InvalidDataException($"tokenizer.json merge {i} is null");
        return result;
    }

    /// <summary>Which llama.cpp pre-tokenizer the Split regex is (by its digit rule), or GPT-2's built-in one.</summary>
    static PreTokenizer DetectPreTokenizer(JsonElement pre)
    {
        string? pattern = FindSplitPattern(pre);
        if (pattern == null)
            return PreTokenizer.FromGgufName("gpt-2");
        if (pattern.Contains(@"\p{N}{1,3}", StringComparison.Ordinal))
            return PreTokenizer.FromGgufName("llama-bpe");
        if (pattern.Contains(@"\p{N}|", StringComparison.Ordinal))
            return PreTokenizer.FromGgufName("qwen2");
        throw new NotSupportedException($"unsupported pre-tokenizer regex in tokenizer.json: {pattern}");
    }

    static string? FindSplitPattern(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            if (e.TryGetProperty("type", out var type) && type.GetString() == "Split"
                && e.TryGetProperty("pattern", out var pattern) && pattern.TryGetProperty("Regex", out var regex))
                return regex.GetString();
            foreach (var property in e.EnumerateObject())
                if (FindSplitPattern(property.Value) is { } found)
                    return found;
        }
        else if (e.ValueKind == JsonValueKind.Array)
            foreach (var item in e.EnumerateArray())
                if (FindSplitPattern(item) is { } found)
                    return found;
        return null;
    }

    /// <summary>Whether a component of this "type" appears anywhere in a (possibly nested Sequence) element.</summary>
    static bool Mentions(JsonElement e, string typeName)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            if (e.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() == typeName)
                return true;
            foreach (var property in e.EnumerateObject())
                if (Mentions(property.Value, typeName))
                    return true;
        }
        else if (e.ValueKind == JsonValueKind.Array)
            foreach (var item in e.EnumerateArray())
                if (Mentions(item, typeName))
                    return true;
        return false;
    }

    /// <summary>The special token a TemplateProcessing "single" template starts with, or -1.</summary>
    static int TemplateFirstSpecial(JsonElement root, Dictionary<string, int> lookup)
    {
        if (!root.TryGetProperty("post_processor", out var post) || post.ValueKind != JsonValueKind.Object)
            return -1;
        var queue = new Queue<JsonElement>();
        queue.Enqueue(post);
        while (queue.Count > 0)
        {
            var e = queue.Dequeue();
            if (e.TryGetProperty("single", out var single) && single.ValueKind == JsonValueKind.Array && single.GetArrayLength() > 0)
            {
                var first = single[0];
                if (first.TryGetProperty("SpecialToken", out var st) && lookup.TryGetValue(st.GetProperty("id").GetString()!, out var id))
                    return id;
                return -1;
            }
            if (e.TryGetProperty("processors", out var processors) && processors.ValueKind == JsonValueKind.Array)
                foreach (var p in processors.EnumerateArray())
                    queue.Enqueue(p);
        }
        return -1;
    }

    /// <summary>A token named in tokenizer_config.json as a string or as {"content": ...}; null when absent.</summary>
    static int? ConfigToken(JsonElement? config, string key, Dictionary<string, int> lookup)
    {
        if (config is not { } c || !c.TryGetProperty(key, out var value))
            return null;
        string? text = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var content) => content.GetString(),
            _ => null,
        };
        if (text == null)
            return -1;
        return lookup.TryGetValue(text, out var id) ? id : throw new InvalidDataException($"tokenizer_config.json {key} '{text}' is not in the vocabulary");
    }
}
