using System.Text.RegularExpressions;

namespace SpeCache.Tokenizers;

/// <summary>
/// Splits text into words before byte-level BPE, with the regexes llama.cpp picks for
/// tokenizer.ggml.pre. Several regexes apply in turn, each splitting the pieces of the one
/// before, and text between matches stays a piece of its own (llama.cpp's unicode_regex_split).
/// </summary>
public sealed class PreTokenizer
{
    // .NET regexes see UTF-16 code units, llama.cpp sees code points. The only place that
    // matters here is an optional single "other" character before a letter run: a surrogate pair
    // (an emoji) must count as one character there. Astral letters and digits (rare) are not
    // recognised as \p{L}/\p{N}: a known difference.
    const string OneOther = @"(?:[\uD800-\uDBFF][\uDC00-\uDFFF]|[^\r\n\p{L}\p{N}])";
    const string Contractions = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

    public const string Llama3Pattern = Contractions + "|" + OneOther + @"?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Qwen2Pattern = Contractions + "|" + OneOther + @"?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

    /// <summary>The pre-tokenizer name as written to tokenizer.ggml.pre.</summary>
    public string Name { get; }
    /// <summary>llama.cpp's ignore_merges: a word that is a whole token is not merged (Llama 3).</summary>
    public bool IgnoreMerges { get; }
    /// <summary>llama.cpp's clean_spaces for this pre-tokenizer.</summary>
    public bool CleanSpaces { get; }

    readonly Regex[] regexes;

    public PreTokenizer(string name, bool ignoreMerges, bool cleanSpaces, params string[] patterns)
    {
        Name = name;
        IgnoreMerges = ignoreMerges;
        CleanSpaces = cleanSpaces;
        regexes = new Regex[patterns.Length];
        for (int i = 0; i < patterns.Length; i++)
            regexes[i] = new Regex(patterns[i], RegexOptions.CultureInvariant);
    }

    /// <summary>
    /// The pre-tokenizer llama.cpp uses for a tokenizer.ggml.pre value. A missing value means
    /// "default" (llama.cpp warns and does the same); a value llama.cpp does not know makes it
    /// refuse the model, and so do we, rather than tokenize silently differently.
    /// </summary>
    public static PreTokenizer FromGgufName(string? pre) => pre switch
    {
        null or "" or "default" => new("default", false, true,
            @"[\p{P}\$\+<=>\^~\|]+", Gpt2Pattern, @"\p{N}+", "[0-9][0-9][0-9]"),
        "llama3" or "llama-v3" or "llama-bpe" => new("llama-bpe", true, true, Llama3Pattern),
        "qwen2" or "deepseek-r1-qwen" => new("qwen2", false, false, Qwen2Pattern),
        "gpt-2" or "phi-2" => new("gpt-2", false, true, Gpt2Pattern),
        _ => throw new NotSupportedException($"unsupported tokenizer.ggml.pre '{pre}' (supported: default, llama-bpe/llama3, qwen2, gpt-2)"),
    };

    public List<string> Split(string text)
    {
        var pieces = new List<string> { text };
        foreach (var regex in regexes)
        {
            var next = new List<string>(pieces.Count * 2);
            foreach (var piece in pieces)
            {
                int position = 0;
                foreach (var match in regex.EnumerateMatches(piece))
                {
                    if (match.Length == 0)
                        continue;
                    if (match.Index > position)
                        next.Add(piece.Substring(position, match.Index - position));
                    next.Add(piece.Substring(match.Index, match.Length));
                    position = match.Index + match.Length;
                }
                if (position < piece.Length)
                    next.Add(piece[position..]);
            }
            pieces = next;
        }
        return pieces;
    }
}
