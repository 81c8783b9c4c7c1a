namespace SpeCache.Tokenizers;

/// <summary>
/// Cuts text at the literal text of special tokens before the tokenizer algorithm sees it, as
/// llama.cpp's tokenizer_st_partition does: user-defined tokens always, control tokens only when
/// the caller asks to parse special tokens. Longer tokens are tried first.
/// </summary>
public sealed class SpecialTokenSplitter
{
    readonly (string Text, int Id, bool Control)[] _specials;

    public SpecialTokenSplitter(Vocabulary vocabulary)
    {
        var list = new List<(string, int, bool)>();
        for (int i = 0; i < vocabulary.Count; i++)
        {
            var type = vocabulary.Types[i];
            if (type is TokenType.Control or TokenType.UserDefined or TokenType.Unknown && vocabulary.Tokens[i].Length > 0)
                list.Add((vocabulary.Tokens[i], i, type != TokenType.UserDefined));
        }
        _specials = list.OrderByDescending(s => s.Item1.Length).ThenBy(s => s.Item2).ToArray();
    }

    /// <summary>A piece of the input: either plain text to tokenize, or one special token id.</summary>
    public readonly record struct Fragment(string? Text, int Token);

    public List<Fragment> Split(string text, bool parseSpecial)
    {
        var fragments = new List<Fragment>();
        int start = 0, position = 0;
        while (position < text.Length)
        {
            int matched = -1, length = 0;
            foreach (var (special, id, control) in _specials)
            {
                if (control && !parseSpecial) continue;
                if (string.CompareOrdinal(text, position, special, 0, special.Length) == 0 && position + special.Length <= text.Length)
                {
                    matched = id;
                    length = special.Length;
                    break;
                }
            }
            if (matched < 0)
            {
                position++;
                continue;
            }
            if (position > start) fragments.Add(new Fragment(text[start..position], -1));
            fragments.Add(new Fragment(null, matched));
            position += length;
            start = position;
        }
        if (start < text.Length) fragments.Add(new Fragment(text[start..], -1));
        return fragments;
    }
}
