using System.Text;
using System.Text.RegularExpressions;

namespace SpeCache.Tokenizers;

/// <summary>
/// Rank-ordered BPE, in the two flavours Llama-family models ship:
/// <list type="bullet">
/// <item><b>byte-level</b> (GGUF <c>gpt2</c> model; Llama 3 and Qwen2 tokenizer.json): a pre-tokenizer
/// regex splits the text into words, every byte maps to a printable character (GPT-2's table), and
/// merges apply within each word.</item>
/// <item><b>byte-fallback</b> (SentencePiece models exported to tokenizer.json): spaces become "▁",
/// a "▁" is prepended, merges apply over the whole text, and characters outside the vocabulary
/// become &lt;0xXX&gt; tokens.</item>
/// </list>
/// The lowest-ranked adjacent pair in the merge list merges first (leftmost on ties), as in
/// llama.cpp's llm_tokenizer_bpe and Hugging Face tokenizers. Hand-written rather than
/// Microsoft.ML.Tokenizers' BPE because llama.cpp's special-token splitting, its per-model regexes
/// and its ignore_merges rule must match token for token, and one small table-driven merge loop
/// serves both flavours.
/// </summary>
public sealed class BpeTokenizer : ITokenizer
{
    /// <summary>Llama 3 (tokenizer.ggml.pre llama-bpe / llama3). Same as Qwen2's but digits go in runs of up to three.</summary>
    public const string Llama3Pattern = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Qwen2Pattern = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    const char SpaceMarker = '\u2581';
    static readonly char[] ByteToChar = BuildByteTable();
    static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, (byte)b)).ToDictionary(p => p.c, p => p.Item2);

    readonly Vocabulary _vocab;
    readonly Dictionary<(string, string), int> _ranks;
    readonly Regex? _preTokenizer;
    readonly bool _byteLevel, _ignoreMerges;
    readonly SpecialTokenSplitter _splitter;
    readonly HashSet<int> _endOfGeneration;
    readonly byte[][] _pieces;
    readonly int[] _byteTokens = new int[256];

    /// <param name="merges">Merge rules "left right", in rank order.</param>
    /// <param name="preTokenizerPattern">The word-splitting regex for byte-level BPE; null for byte-fallback BPE.</param>
    /// <param name="ignoreMerges">Llama 3: a whole word that is itself a token is emitted without merging.</param>
    public BpeTokenizer(Vocabulary vocabulary, IReadOnlyList<string> merges, string? preTokenizerPattern, bool byteLevel, bool ignoreMerges = false)
    {
        _vocab = vocabulary;
        _byteLevel = byteLevel;
        _ignoreMerges = ignoreMerges;
        _preTokenizer = preTokenizerPattern == null ? null : new Regex(preTokenizerPattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);
        _ranks = new Dictionary<(string, string), int>(merges.Count);
        for (int i = 0; i < merges.Count; i++)
        {
            int space = merges[i].IndexOf(' ', 1);
            if (space < 0) throw new InvalidDataException($"tokenizer merge #{i} '{merges[i]}' is not two tokens separated by a space");
            _ranks.TryAdd((merges[i][..space], merges[i][(space + 1)..]), i);
        }
        _splitter = new SpecialTokenSplitter(vocabulary);
        _endOfGeneration = vocabulary.EndOfGeneration();
        for (int b = 0; b < 256; b++)
            _byteTokens[b] = byteLevel ? vocabulary.Find(ByteToChar[b].ToString()) : vocabulary.Find($"<0x{b:X2}>");
        _pieces = new byte[vocabulary.Count][];
        for (int i = 0; i < vocabulary.Count; i++) _pieces[i] = Piece(i);
    }

    public Vocabulary Vocabulary => _vocab;
    public bool ByteLevel => _byteLevel;
    public int VocabSize => _vocab.Count;
    public int BosToken => _vocab.Bos;
    public int EosToken => _vocab.Eos;
    public bool AddBos => _vocab.AddBos;
    public bool AddsSpacePrefix => _vocab.AddSpacePrefix;
    public bool IsEndOfGeneration(int token) => _endOfGeneration.Contains(token);
    public string TokenText(int token) => _vocab.Tokens[token];
    public ReadOnlySpan<byte> TokenBytes(int token) => _pieces[token];

    byte[] Piece(int id)
    {
        string text = _vocab.Tokens[id];
        switch (_vocab.Types[id])
        {
            case TokenType.Control:
            case TokenType.Unused:
                return [];
            case TokenType.UserDefined:
                return Encoding.UTF8.GetBytes(text);
        }
        if (!_byteLevel)
        {
            if (_vocab.Types[id] == TokenType.Byte || (text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text.EndsWith('>')))
                return [Convert.ToByte(text.Substring(3, 2), 16)];
            return Encoding.UTF8.GetBytes(text.Replace(SpaceMarker, ' '));
        }
        var bytes = new byte[text.Length];
        int n = 0;
        foreach (char c in text)
        {
            if (CharToByte.TryGetValue(c, out byte b)) bytes[n++] = b;
            else return Encoding.UTF8.GetBytes(text); // not in GPT-2's byte alphabet: show it as it is
        }
        return bytes[..n];
    }

    public int[] Encode(string text, bool addBos, bool parseSpecial = false)
    {
        var output = new List<int>();
        if (addBos && _vocab.Bos >= 0) output.Add(_vocab.Bos);
        bool first = true;
        foreach (var fragment in _splitter.Split(text, parseSpecial))
        {
            if (fragment.Text == null)
            {
                output.Add(fragment.Token);
                first = false;
                continue;
            }
            if (_byteLevel)
            {
                foreach (Match word in _preTokenizer!.Matches(fragment.Text))
                    EncodeWord(ToByteAlphabet(word.Value), output);
            }
            else
            {
                // SentencePiece normalization: "▁" for spaces and one in front of the text.
                string normalized = (first && _vocab.AddSpacePrefix ? "\u2581" : "") + fragment.Text.Replace(' ', SpaceMarker);
                EncodeWord(normalized, output);
            }
            first = false;
        }
        if (_vocab.AddEos && addBos && _vocab.Eos >= 0) output.Add(_vocab.Eos);
        return output.ToArray();
    }

    static string ToByteAlphabet(string word)
    {
        var bytes = Encoding.UTF8.GetBytes(word);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    void EncodeWord(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.Find(word) is int whole and >= 0)
        {
            output.Add(whole);
            return;
        }
        // Symbols: one per character (surrogate pairs together), merged by rank in place.
        var parts = new List<string>(word.Length);
        for (int i = 0; i < word.Length;)
        {
            int length = char.IsHighSurrogate(word[i]) && i + 1 < word.Length ? 2 : 1;
            parts.Add(word.Substring(i, length));
            i += length;
        }
        while (parts.Count > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (_ranks.TryGetValue((parts[i], parts[i + 1]), out int rank) && rank < bestRank)
                {
                    bestRank = rank;
                    best = i;
                }
            if (best < 0) break;
            parts[best] += parts[best + 1];
            parts.RemoveAt(best + 1);
        }
        foreach (var part in parts)
        {
            int id = _vocab.Find(part);
            if (id >= 0)
            {
                output.Add(id);
                continue;
            }
            // Not a token: its bytes, as byte tokens (or <unk> if the vocabulary has none).
            var bytes = _byteLevel ? part.Select(c => CharToByte.GetValueOrDefault(c)).ToArray() : Encoding.UTF8.GetBytes(part);
            foreach (byte b in bytes)
                output.Add(_byteTokens[b] >= 0 ? _byteTokens[b] : Math.Max(_vocab.Unknown, 0));
        }
    }

    public string Decode(ReadOnlySpan<int> tokens)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < tokens.Length; i++)
        {
            var piece = _pieces[tokens[i]];
            int skip = !_byteLevel && i == 0 && _vocab.AddSpacePrefix && piece.Length > 0 && piece[0] == (byte)' ' ? 1 : 0;
            for (int j = skip; j < piece.Length; j++) bytes.Add(piece[j]);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>GPT-2's reversible byte-to-character table: printable bytes map to themselves, the rest to 256+.</summary>
    static char[] BuildByteTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }
}
