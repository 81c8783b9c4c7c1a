using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>
/// SentencePiece-style tokenizer with llama.cpp's llm_tokenizer_spm semantics: spaces become "▁"
/// (with an optional "▁" prefix), UTF-8 characters are merged pairwise, always the adjacent pair
/// whose concatenation is the highest-scoring vocabulary token (leftmost on ties), and pieces
/// that are not tokens fall back to &lt;0xXX&gt; byte tokens.
/// </summary>
/// <remarks>
/// Hand-written: Microsoft.ML.Tokenizers' SentencePieceTokenizer needs a .model protobuf and
/// follows SentencePiece itself, not llama.cpp's score-only merging from GGUF metadata.
/// </remarks>
public sealed class SpmTokenizer : TokenizerBase
{
    public SpmTokenizer(Vocabulary vocab) : base(vocab) { }

    public override IReadOnlyDictionary<string, object> ToGgufMetadata() => Vocab.ToGgufMetadata("llama", "default");

    protected override byte[] NormalPiece(int token) => Encoding.UTF8.GetBytes(Vocab.Tokens[token].Replace('▁', ' '));

    struct Symbol
    {
        public int Prev, Next;
        public int Start, Length; // chars of the escaped text; Length 0 once merged away
    }

    readonly record struct Bigram(int Left, int Right, int Size);

    /// <summary>Highest score first, then leftmost, as llama.cpp's llm_bigram_spm comparator orders them.</summary>
    sealed class BigramOrder : IComparer<(float Score, int Left)>
    {
        public static readonly BigramOrder Instance = new();
        public int Compare((float Score, int Left) a, (float Score, int Left) b) =>
            a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left);
    }

    protected override void EncodeText(ReadOnlySpan<char> raw, bool afterSpecial, List<int> output)
    {
        var builder = new StringBuilder(raw.Length + 1);
        if (Vocab.AddSpacePrefix && afterSpecial)
            builder.Append('▁');
        foreach (var c in raw)
            builder.Append(c == ' ' ? '▁' : c);
        string text = builder.ToString();

        // One symbol per Unicode character (a surrogate pair stays together, as one UTF-8 character).
        var symbols = new List<Symbol>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            int length = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            symbols.Add(new Symbol { Prev = symbols.Count - 1, Next = i + length < text.Length ? symbols.Count + 1 : -1, Start = i, Length = length });
            i += length;
        }

        var queue = new PriorityQueue<Bigram, (float, int)>(BigramOrder.Instance);
        for (int i = 1; i < symbols.Count; i++)
            TryAddBigram(text, symbols, queue, i - 1, i);

        while (queue.TryDequeue(out var bigram, out _))
        {
            var left = symbols[bigram.Left];
            var right = symbols[bigram.Right];
            // Skip bigrams made stale by an earlier merge.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Size)
                continue;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0)
            {
                var next = symbols[right.Next];
                next.Prev = bigram.Left;
                symbols[right.Next] = next;
            }
            symbols[bigram.Left] = left;
            symbols[bigram.Right] = right;
            TryAddBigram(text, symbols, queue, left.Prev, bigram.Left);
            TryAddBigram(text, symbols, queue, bigram.Left, left.Next);
        }

        for (int i = 0; i != -1 && symbols.Count > 0; i = symbols[i].Next)
            Resegment(text.AsSpan(symbols[i].Start, symbols[i].Length), output);
    }

    void TryAddBigram(string text, List<Symbol> symbols, PriorityQueue<Bigram, (float, int)> queue, int left, int right)
    {
        if (left < 0 || right < 0)
            return;
        var piece = text.AsSpan(symbols[left].Start, symbols[left].Length + symbols[right].Length);
        if (!Vocab.TryFind(piece, out var id))
            return;
        queue.Enqueue(new Bigram(left, right, piece.Length), (Vocab.Scores[id], left));
    }

    /// <summary>
    /// A merged symbol is always a token (pairs are only merged into tokens), so only single
    /// characters can miss the vocabulary; those become byte tokens. (llama.cpp keeps a
    /// rev_merge map for this step that never fires for the same reason.)
    /// </summary>
    void Resegment(ReadOnlySpan<char> piece, List<int> output)
    {
        if (Vocab.TryFind(piece, out var id))
        {
            output.Add(id);
            return;
        }
        Span<byte> bytes = stackalloc byte[Encoding.UTF8.GetMaxByteCount(piece.Length)];
        int n = Encoding.UTF8.GetBytes(piece, bytes);
        foreach (var b in bytes[..n])
            output.Add(ByteToken(b));
    }

    /// <summary>llama.cpp's byte_to_token for SPM: "&lt;0xXX&gt;", else the byte as a one-character token, else unk.</summary>
    int ByteToken(byte b)
    {
        int id = Vocab.Find($"<0x{b:X2}>");
        if (id >= 0)
            return id;
        if (b < 0x80 && Vocab.TryFind(((char)b).ToString(), out id))
            return id;
        return Vocab.Unk >= 0 ? Vocab.Unk : throw new InvalidDataException($"vocabulary has no token for byte 0x{b:X2} and no unknown token");
    }
}
