using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>
/// BPE by merge rank (lowest rank first, leftmost on ties), in two flavours:
/// byte-level (GPT-2 / Llama 3 / Qwen2: regex pre-tokenizer, bytes as the GPT-2 alphabet;
/// llama.cpp's llm_tokenizer_bpe) and SentencePiece-style with byte fallback (Hugging Face
/// "BPE" with a "▁" normalizer, as tinystories-656k ships).
/// </summary>
/// <remarks>
/// Hand-written rather than Microsoft.ML.Tokenizers' BpeTokenizer: we need llama.cpp's
/// ignore_merges, its fallback for symbols missing from the vocabulary and its special-token
/// partitioning, and the same merge code serves GGUF metadata and tokenizer.json.
/// </remarks>
public sealed class BpeTokenizer : TokenizerBase
{
    readonly Dictionary<string, int> ranks; // "left right" -> rank
    readonly string[] merges;
    readonly PreTokenizer? preTokenizer;    // null: SentencePiece-style
    readonly bool fuseUnk = true;           // Hugging Face's fuse_unk, as Llama-2-style tokenizer.json files set it

    /// <summary>A byte-level BPE tokenizer (GGUF tokenizer.ggml.model "gpt2").</summary>
    public static BpeTokenizer ByteLevelBpe(Vocabulary vocab, string[] merges, PreTokenizer preTokenizer) =>
        new(vocab, merges, preTokenizer ?? throw new ArgumentNullException(nameof(preTokenizer)));

    /// <summary>SentencePiece-style BPE: spaces are "▁", unknown characters fall back to &lt;0xXX&gt;.</summary>
    public static BpeTokenizer SentencePieceBpe(Vocabulary vocab, string[] merges) => new(vocab, merges, null);

    BpeTokenizer(Vocabulary vocab, string[] merges, PreTokenizer? preTokenizer) : base(vocab)
    {
        this.merges = merges;
        this.preTokenizer = preTokenizer;
        ranks = new Dictionary<string, int>(merges.Length, StringComparer.Ordinal);
        for (int i = 0; i < merges.Length; i++)
        {
            if (merges[i].IndexOf(' ', 1) < 0)
                throw new InvalidDataException($"BPE merge {i} '{merges[i]}' is not two pieces separated by a space");
            ranks.TryAdd(merges[i], i);
        }
    }

    public bool IsByteLevel => preTokenizer != null;
    public IReadOnlyList<string> Merges => merges;

    protected override bool CleanSpaces => preTokenizer?.CleanSpaces ?? false;

    /// <summary>
    /// Byte-level: model "gpt2" with its merges and pre. SentencePiece-style: model "llama" (SPM),
    /// with scores chosen so SPM's highest-score-first merging replays the merge order: a token
    /// made by merge r scores -r, every other token keeps its score (0).
    /// Caveat: a character outside a SentencePiece-style vocabulary that has no &lt;0xXX&gt; tokens
    /// (tinystories-656k has none) has no SPM fallback in llama.cpp: its byte_to_token throws and
    /// the process aborts. Hugging Face and we give &lt;unk&gt; instead. Nothing in the metadata can
    /// fix that without adding tokens, which the model's embedding does not have.
    /// </summary>
    public override IReadOnlyDictionary<string, object> ToGgufMetadata()
    {
        if (preTokenizer != null)
        {
            var meta = Vocab.ToGgufMetadata("gpt2", preTokenizer.Name);
            meta["tokenizer.ggml.merges"] = (string[])merges.Clone();
            return meta;
        }
        var spm = Vocab.ToGgufMetadata("llama", "default");
        var scores = new float[Vocab.Count];
        var seen = new bool[Vocab.Count];
        for (int r = 0; r < merges.Length; r++)
        {
            int id = Vocab.Find(merges[r].Replace(" ", "", StringComparison.Ordinal));
            if (id >= 0 && !seen[id])
            {
                seen[id] = true;
                scores[id] = -r;
            }
        }
        spm["tokenizer.ggml.scores"] = scores;
        return spm;
    }

    protected override byte[] NormalPiece(int token) => preTokenizer != null
        ? ByteLevel.Decode(Vocab.Tokens[token])
        : Encoding.UTF8.GetBytes(Vocab.Tokens[token].Replace('▁', ' '));

    protected override void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output)
    {
        if (preTokenizer == null)
        {
            // Hugging Face's Prepend("▁") + Replace(" ", "▁") normalizer. Like llama.cpp's SPM, the
            // prefix goes on text that starts the input or follows a special token.
            var builder = new StringBuilder(text.Length + 1);
            if (Vocab.AddSpacePrefix && afterSpecial)
                builder.Append('▁');
            foreach (var c in text)
                builder.Append(c == ' ' ? '▁' : c);
            EncodeWord(builder.ToString(), output);
            return;
        }
        foreach (var word in preTokenizer.Split(text.ToString()))
        {
            string encoded = ByteLevel.Encode(word);
            if (preTokenizer.IgnoreMerges && Vocab.TryFind(encoded, out var whole))
            {
                output.Add(whole);
                continue;
            }
            EncodeWord(encoded, output);
        }
    }

    struct Symbol
    {
        public int Prev, Next, Start, Length;
    }

    sealed class PairOrder : IComparer<(int Rank, int Left)>
    {
        public static readonly PairOrder Instance = new();
        public int Compare((int Rank, int Left) a, (int Rank, int Left) b) =>
            a.Rank != b.Rank ? a.Rank.CompareTo(b.Rank) : a.Left.CompareTo(b.Left);
    }

    readonly record struct Pair(int Left, int Right, int Size);

    void EncodeWord(string word, List<int> output)
    {
        var symbols = new List<Symbol>(word.Length);
        for (int i = 0; i < word.Length;)
        {
            int length = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            symbols.Add(new Symbol { Prev = symbols.Count - 1, Next = i + length < word.Length ? symbols.Count + 1 : -1, Start = i, Length = length });
            i += length;
        }
        var queue = new PriorityQueue<Pair, (int, int)>(PairOrder.Instance);
        var key = new StringBuilder();
        for (int i = 1; i < symbols.Count; i++)
            TryAddPair(word, symbols, queue, key, i - 1, i);

        while (queue.TryDequeue(out var pair, out _))
        {
            var left = symbols[pair.Left];
            var right = symbols[pair.Right];
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != pair.Size || left.Next != pair.Right)
                continue;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0)
            {
                var next = symbols[right.Next];
                next.Prev = pair.Left;
                symbols[right.Next] = next;
            }
            symbols[pair.Left] = left;
            symbols[pair.Right] = right;
            TryAddPair(word, symbols, queue, key, left.Prev, pair.Left);
            TryAddPair(word, symbols, queue, key, pair.Left, left.Next);
        }

        bool previousWasUnk = false;
        for (int i = 0; i != -1 && symbols.Count > 0; i = symbols[i].Next)
        {
            var piece = word.AsSpan(symbols[i].Start, symbols[i].Length);
            if (Vocab.TryFind(piece, out var id))
            {
                output.Add(id);
                previousWasUnk = false;
            }
            else if (preTokenizer != null)
                ByteLevelFallback(piece, output);
            else
                previousWasUnk = ByteFallback(piece, previousWasUnk, output);
        }
    }

    void TryAddPair(string word, List<Symbol> symbols, PriorityQueue<Pair, (int, int)> queue, StringBuilder key, int left, int right)
    {
        if (left < 0 || right < 0)
            return;
        var l = symbols[left];
        var r = symbols[right];
        key.Clear().Append(word, l.Start, l.Length).Append(' ').Append(word, r.Start, r.Length);
        if (ranks.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(ToSpan(key), out var rank))
            queue.Enqueue(new Pair(left, right, l.Length + r.Length), (rank, left));
    }

    static ReadOnlySpan<char> ToSpan(StringBuilder builder)
    {
        foreach (var chunk in builder.GetChunks())
            if (chunk.Length == builder.Length)
                return chunk.Span;
        return builder.ToString();
    }

    /// <summary>llama.cpp: a symbol that is no token is emitted character by character, dropping characters that are no token either.</summary>
    void ByteLevelFallback(ReadOnlySpan<char> piece, List<int> output)
    {
        foreach (var c in piece)
            if (Vocab.TryFind(new ReadOnlySpan<char>(in c), out var id))
                output.Add(id);
    }

    /// <summary>
    /// Hugging Face BPE for a character missing from the vocabulary (only single characters can
    /// be, merges only make tokens): its UTF-8 bytes as &lt;0xXX&gt; tokens when all of them exist
    /// (byte_fallback), else the unknown token, one for a run of such characters (fuse_unk).
    /// Returns whether it emitted an unknown token.
    /// </summary>
    bool ByteFallback(ReadOnlySpan<char> piece, bool previousWasUnk, List<int> output)
    {
        Span<byte> bytes = stackalloc byte[Encoding.UTF8.GetMaxByteCount(piece.Length)];
        int n = Encoding.UTF8.GetBytes(piece, bytes);
        Span<int> ids = stackalloc int[n];
        bool all = true;
        for (int i = 0; i < n && all; i++)
        {
            ids[i] = Vocab.Find($"<0x{bytes[i]:X2}>");
            all = ids[i] >= 0;
        }
        if (all)
        {
            foreach (var id in ids)
                output.Add(id);
            return false;
        }
        if (Vocab.Unk < 0)
            throw new InvalidDataException($"'{piece}' is not in the vocabulary, which has neither byte tokens nor an unknown token");
        if (!(previousWasUnk && fuseUnk))
            output.Add(Vocab.Unk);
        return true;
    }
}
