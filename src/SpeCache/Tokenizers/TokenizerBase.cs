using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>
/// What SPM and BPE share: special-token partitioning, BOS/EOS, per-token bytes and llama.cpp's
/// detokenize. Subclasses only encode one run of plain text.
/// </summary>
/// <remarks>
/// Written by hand rather than on Microsoft.ML.Tokenizers: its models do not reproduce
/// llama.cpp's tokenizer_st_partition (every user-defined token is split out even without
/// parse_special; control tokens only with it) nor llama.cpp's detokenize rules, and we test
/// against llama.cpp's own vectors.
/// </remarks>
public abstract class TokenizerBase : ITokenizer
{
    protected TokenizerBase(Vocabulary vocab)
    {
        Vocab = vocab;
        pieces = new byte[vocab.Count][];
    }

    public Vocabulary Vocab { get; }

    public int VocabSize => Vocab.Count;
    public int BosToken => Vocab.Bos;
    public int EosToken => Vocab.Eos;
    public bool AddBos => Vocab.AddBos;
    /// <summary>SentencePiece-style: a "▁" is put before the text, so the first decoded piece starts with a space that is not part of it.</summary>
    public bool AddsSpacePrefix => Vocab.AddSpacePrefix;

    /// <summary>llama.cpp's clean_spaces: detokenize drops the space before ?!., and around some apostrophes.</summary>
    protected virtual bool CleanSpaces => false;

    public bool IsEndOfGeneration(int token) => Vocab.EndOfGeneration.Contains(token);

    public string TokenText(int token) => Vocab.IsValid(token) ? Vocab.Tokens[token] : throw new ArgumentOutOfRangeException(nameof(token));

    /// <summary>Writes the tokenizer.ggml.* keys llama.cpp needs to load this vocabulary identically.</summary>
    public abstract IReadOnlyDictionary<string, object> ToGgufMetadata();

    public int[] Encode(string text, bool addBos, bool parseSpecial = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos && Vocab.IsValid(Vocab.Bos))
            output.Add(Vocab.Bos);
        if (text.Length > 0)
        {
            bool previousWasSpecial = true;
            foreach (var fragment in Partition(text, parseSpecial))
            {
                if (fragment.Token >= 0)
                {
                    output.Add(fragment.Token);
                    previousWasSpecial = true;
                }
                else
                {
                    EncodeText(text.AsSpan(fragment.Start, fragment.Length), previousWasSpecial, output);
                    previousWasSpecial = false;
                }
            }
        }
        // llama.cpp adds EOS under the same add_special switch as BOS.
        if (addBos && Vocab.AddEos && Vocab.IsValid(Vocab.Eos))
            output.Add(Vocab.Eos);
        return output.ToArray();
    }

    /// <summary>Encodes one run of text that holds no special token.</summary>
    /// <param name="afterSpecial">The run starts the text or follows a special token (SPM adds its space prefix then).</param>
    protected abstract void EncodeText(ReadOnlySpan<char> text, bool afterSpecial, List<int> output);

    protected readonly record struct Fragment(int Token, int Start, int Length);

    /// <summary>
    /// Splits text on the texts of special tokens, longest first, like llama.cpp's
    /// tokenizer_st_partition: user-defined tokens always, control and unknown ones only with
    /// <paramref name="parseSpecial"/>.
    /// </summary>
    protected List<Fragment> Partition(string text, bool parseSpecial)
    {
        var fragments = new List<Fragment> { new(-1, 0, text.Length) };
        foreach (var (special, id) in Vocab.SpecialTokens)
        {
            if (!parseSpecial && Vocab.Types[id] != TokenType.UserDefined)
                continue;
            for (int f = 0; f < fragments.Count; f++)
            {
                var fragment = fragments[f];
                if (fragment.Token >= 0)
                    continue;
                int at = text.IndexOf(special, fragment.Start, fragment.Length, StringComparison.Ordinal);
                if (at < 0)
                    continue;
                int end = fragment.Start + fragment.Length;
                var replacement = new List<Fragment>();
                int position = fragment.Start;
                while (at >= 0)
                {
                    if (at > position)
                        replacement.Add(new(-1, position, at - position));
                    replacement.Add(new(id, at, special.Length));
                    position = at + special.Length;
                    at = position < end ? text.IndexOf(special, position, end - position, StringComparison.Ordinal) : -1;
                }
                if (position < end)
                    replacement.Add(new(-1, position, end - position));
                fragments.RemoveAt(f);
                fragments.InsertRange(f, replacement);
                f += replacement.Count - 1;
            }
        }
        return fragments;
    }

    readonly byte[]?[] pieces;

    public ReadOnlySpan<byte> TokenBytes(int token)
    {
        if (!Vocab.IsValid(token))
            throw new ArgumentOutOfRangeException(nameof(token), $"token {token} is outside the vocabulary of {Vocab.Count}");
        return pieces[token] ??= ComputePiece(token);
    }

    /// <summary>The bytes of one token as llama.cpp's token_to_piece gives them with special=false.</summary>
    byte[] ComputePiece(int token)
    {
        var type = Vocab.Types[token];
        if (type is TokenType.Control or TokenType.Unknown)
            return [];
        if (type == TokenType.UserDefined)
            return Encoding.UTF8.GetBytes(Vocab.Tokens[token]);
        if (type == TokenType.Byte)
            return ByteOfByteToken(token) is int b ? [(byte)b] : [];
        if (type == TokenType.Normal)
            return NormalPiece(token);
        // llama.cpp suppresses unused and undefined tokens like control tokens.
        return [];
    }

    protected abstract byte[] NormalPiece(int token);

    /// <summary>The byte a byte token stands for: "&lt;0xXX&gt;" in SPM vocabularies.</summary>
    protected virtual int? ByteOfByteToken(int token)
    {
        var text = Vocab.Tokens[token];
        if (text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>'
            && byte.TryParse(text.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out var b))
            return b;
        return null;
    }

    /// <summary>
    /// llama_detokenize(remove_special: false, unparse_special: false): the pieces concatenated,
    /// with one leading space dropped from the first token when the vocabulary adds a space prefix
    /// (note: if the first token is BOS, which prints nothing, no space is dropped, exactly as llama.cpp).
    /// </summary>
    public string Decode(ReadOnlySpan<int> tokens)
    {
        var bytes = new List<byte>(tokens.Length * 4);
        bool removeSpace = Vocab.AddSpacePrefix;
        foreach (var token in tokens)
        {
            var piece = TokenBytes(token);
            if (removeSpace && piece.Length > 0 && piece[0] == (byte)' ')
                piece = piece[1..];
            removeSpace = false;
            foreach (var b in piece)
                bytes.Add(b);
        }
        if (CleanSpaces)
            CleanUpSpaces(bytes);
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>The three passes of llama.cpp's clean_spaces, on bytes.</summary>
    static void CleanUpSpaces(List<byte> text)
    {
        // " ?", " !", " .", " ," lose their space.
        var result = new List<byte>(text.Count);
        for (int i = 0; i < text.Count; i++)
        {
            byte x = text[i];
            if (i > 0 && text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') && result.Count > 0)
                result.RemoveAt(result.Count - 1);
            result.Add(x);
        }
        // " ' " becomes "'".
        var second = new List<byte>(result.Count);
        for (int i = 0; i < result.Count; i++)
        {
            byte x = result[i];
            if (i > 0 && x == '\'' && i + 1 < result.Count && result[i - 1] == ' ' && result[i + 1] == ' ')
            {
                second.RemoveAt(second.Count - 1);
                second.Add(x);
                i++; // the space after
                continue;
            }
            second.Add(x);
        }
        // " 's", " 'm", " 're", " 've" lose their space.
        text.Clear();
        for (int i = 0; i < second.Count; i++)
        {
            byte x = second[i];
            if (i > 0 && second[i - 1] == ' ' && x == '\'' && i + 1 < second.Count)
            {
                byte x1 = second[i + 1];
                bool drop = x1 == 's' || x1 == 'm'
                    || (i + 2 < second.Count && ((x1 == 'r' && second[i + 2] == 'e') || (x1 == 'v' && second[i + 2] == 'e')));
                if (drop)
                    text.RemoveAt(text.Count - 1);
            }
            text.Add(x);
        }
    }
}
