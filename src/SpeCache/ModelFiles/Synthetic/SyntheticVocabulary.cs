using SpeCache.Tokenizers;

namespace SpeCache.ModelFiles.Synthetic;

/// <summary>
/// A made-up SentencePiece (GGUF "llama") vocabulary of any size, for synthetic models: enough for
/// our tokenizer and llama.cpp's to load, encode any text and agree on it. Real vocabularies are not
/// shipped, and the benchmark feeds token ids, so only the size has to match the real model's.
/// </summary>
/// <remarks>
/// Ids 0-2 are &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;; then the 256 byte tokens &lt;0x00&gt;..&lt;0xFF&gt; (llama.cpp
/// looks up &lt;0x0A&gt; for its newline token and falls back to them for any character); then "▁" and the
/// printable ASCII characters; then lowercase words of 2, 3, 4... letters, with and without the "▁"
/// word-start mark, until the size is reached. Scores fall with the id, so shorter pieces merge first.
/// </remarks>
public static class SyntheticVocabulary
{
    const int ByteTokens = 256, SpecialTokens = 3;

    /// <summary>The smallest size: specials, bytes, "▁" and printable ASCII.</summary>
    public const int MinimumSize = SpecialTokens + ByteTokens + 1 + ('~' - '!' + 1);

    public static SpmTokenizer Create(int size)
    {
        if (size < MinimumSize)
            throw new ArgumentOutOfRangeException(nameof(size), size, $"a synthetic vocabulary needs at least {MinimumSize} tokens");
        var tokens = new string[size];
        var types = new TokenType[size];
        var scores = new float[size];
        int n = 0;
        void Add(string text, TokenType type)
        {
            tokens[n] = text;
            types[n] = type;
            scores[n] = type == TokenType.Normal ? -n : 0;
            n++;
        }
        Add("<unk>", TokenType.Unknown);
        Add("<s>", TokenType.Control);
        Add("</s>", TokenType.Control);
        for (int b = 0; b < ByteTokens; b++) Add($"<0x{b:X2}>", TokenType.Byte);
        Add("▁", TokenType.Normal);
        for (char c = '!'; c <= '~'; c++) Add(c.ToString(), TokenType.Normal);
        for (int length = 2; n < size; length++)
            foreach (var word in Words(length))
            {
                if (n < size) Add("▁" + word, TokenType.Normal);
                if (n < size) Add(word, TokenType.Normal);
                if (n == size) break;
            }
        var vocab = new Vocabulary(tokens, scores, types) { Unk = 0, Bos = 1, Eos = 2, AddBos = true, AddSpacePrefix = true };
        return new SpmTokenizer(vocab);
    }

    /// <summary>Every lowercase word of <paramref name="length"/> letters, in alphabetical order.</summary>
    static IEnumerable<string> Words(int length)
    {
        var letters = new char[length];
        Array.Fill(letters, 'a');
        while (true)
        {
            yield return new string(letters);
            int i = length - 1;
            while (i >= 0 && letters[i] == 'z') letters[i--] = 'a';
            if (i < 0) yield break;
            letters[i]++;
        }
    }
}
