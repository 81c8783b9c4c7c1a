using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>
/// SentencePiece-style BPE as llama.cpp runs it for <c>tokenizer.ggml.model = "llama"</c>: spaces
/// become "▁" (with one put in front of the text), the text starts as one symbol per character, and
/// the adjacent pair whose joined text is the highest-scoring token merges first (leftmost on
/// ties) until no pair is a token; characters that never became a token fall back to their
/// &lt;0xXX&gt; byte tokens. Written by hand because llama.cpp-exact behaviour (score order, byte
/// fallback, special-token splitting, its detokenizer's space rules) is what users compare us with.
/// </summary>
public sealed class SentencePieceTokenizer : ITokenizer
{
    const char SpaceMarker = '\u2581'; // ▁
    readonly Vocabulary _vocab;
    readonly SpecialTokenSplitter _splitter;
    readonly HashSet<int> _endOfGeneration;
    readonly byte[][] _pieces;
    readonly int[] _byteTokens = new int[256];

    public SentencePieceTokenizer(Vocabulary vocabulary)
    {
        _vocab = vocabulary;
        _splitter = new SpecialTokenSplitter(vocabulary);
        _endOfGeneration = vocabulary.EndOfGeneration();
        for (int b = 0; b < 256; b++)
        {
            int id = vocabulary.Find($"<0x{b:X2}>");
            _byteTokens[b] = id >= 0 ? id : vocabulary.Find(((char)b).ToString());
        }
        _pieces = new byte[vocabulary.Count][];
        for (int i = 0; i < vocabulary.Count; i++) _pieces[i] = Piece(i);
    }

    public Vocabulary Vocabulary => _vocab;
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
            case TokenType.Byte:
                return text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal)
                    ? [Convert.ToByte(text.Substring(3, 2), 16)]
                    : Encoding.UTF8.GetBytes(text);
            case TokenType.Unknown:
                return Encoding.UTF8.GetBytes(" \u2047 "); // llama.cpp shows unknown tokens as " ⁇ "
            default:
                return Encoding.UTF8.GetBytes(text.Replace(SpaceMarker, ' '));
        }
    }

    public int[] Encode(string text, bool addBos, bool parseSpecial = false)
    {
        var output = new List<int>();
        if (addBos && _vocab.Bos >= 0) output.Add(_vocab.Bos);
        bool previousWasSpecial = true; // the first fragment gets the space prefix
        foreach (var fragment in _splitter.Split(text, parseSpecial))
        {
            if (fragment.Text == null)
            {
                output.Add(fragment.Token);
                previousWasSpecial = true;
                continue;
            }
            string piece = (_vocab.AddSpacePrefix && previousWasSpecial ? " " : "") + fragment.Text;
            EncodeFragment(piece.Replace(' ', SpaceMarker), output);
            previousWasSpecial = false;
        }
        if (_vocab.AddEos && addBos && _vocab.Eos >= 0) output.Add(_vocab.Eos);
        return output.ToArray();
    }

    struct Symbol
    {
        public int Start, Length, Prev, Next;
    }

    readonly record struct Bigram(int Left, int Right, float Score, int Length);

    void EncodeFragment(string text, List<int> output)
    {
        if (text.Length == 0) return;
        // One symbol per Unicode character (surrogate pairs stay together).
        var symbols = new List<Symbol>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            int length = char.IsHighSurrogate(text[i]) && i + 1 < text.Length ? 2 : 1;
            symbols.Add(new Symbol { Start = i, Length = length, Prev = symbols.Count - 1, Next = i + length < text.Length ? symbols.Count + 1 : -1 });
            i += length;
        }
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(symbols);

        // Highest score first; on equal scores the leftmost pair (as llama.cpp's comparator).
        var queue = new PriorityQueue<Bigram, (float NegScore, int Left)>();
        var merges = new Dictionary<string, (int Left, int Right)>(StringComparer.Ordinal);
        void TryAdd(int left, int right, Span<Symbol> s)
        {
            if (left < 0 || right < 0) return;
            string joined = text.Substring(s[left].Start, s[left].Length + s[right].Length);
            int id = _vocab.Find(joined);
            if (id < 0) return;
            queue.Enqueue(new Bigram(left, right, _vocab.Scores[id], joined.Length), (-_vocab.Scores[id], left));
            merges[joined] = (left, right);
        }
        for (int i = 1; i < span.Length; i++) TryAdd(i - 1, i, span);

        while (queue.TryDequeue(out var bigram, out _))
        {
            ref var left = ref span[bigram.Left];
            ref var right = ref span[bigram.Right];
            // Skip pairs made stale by an earlier merge.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Length) continue;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0) span[right.Next].Prev = bigram.Left;
            TryAdd(left.Prev, bigram.Left, span);
            TryAdd(bigram.Left, left.Next, span);
        }

        for (int i = 0; i != -1; i = span[i].Next)
        {
            if (span[i].Length == 0) continue;
            Resegment(text.Substring(span[i].Start, span[i].Length), output);
        }
    }

    /// <summary>A final symbol is a token, or (never merged) characters that fall back to byte tokens.</summary>
    void Resegment(string symbol, List<int> output)
    {
        int id = _vocab.Find(symbol);
        if (id >= 0)
        {
            output.Add(id);
            return;
        }
        foreach (byte b in Encoding.UTF8.GetBytes(symbol))
        {
            int byteToken = _byteTokens[b];
            output.Add(byteToken >= 0 ? byteToken : Math.Max(_vocab.Unknown, 0));
        }
    }

    public string Decode(ReadOnlySpan<int> tokens)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < tokens.Length; i++)
        {
            var piece = _pieces[tokens[i]];
            // Like llama.cpp's detokenizer: only the very first piece loses the prefix space.
            int skip = i == 0 && _vocab.AddSpacePrefix && piece.Length > 0 && piece[0] == (byte)' ' ? 1 : 0;
            for (int j = skip; j < piece.Length; j++) bytes.Add(piece[j]);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
