using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>
/// GPT-2's byte-to-unicode alphabet: every byte gets a printable character so a byte-level BPE
/// vocabulary is plain text (space is "Ġ", newline "Ċ").
/// </summary>
public static class ByteLevel
{
    static readonly char[] byteToChar = BuildTable();
    static readonly Dictionary<char, byte> charToByte = BuildInverse();

    static char[] BuildTable()
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

    static Dictionary<char, byte> BuildInverse()
    {
        var inverse = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++)
            inverse[byteToChar[b]] = (byte)b;
        return inverse;
    }

    public static char CharOf(byte b) => byteToChar[b];

    /// <summary>The UTF-8 bytes of <paramref name="text"/>, each as its alphabet character.</summary>
    public static string Encode(ReadOnlySpan<char> text)
    {
        Span<byte> bytes = text.Length <= 256 ? stackalloc byte[text.Length * 3] : new byte[Encoding.UTF8.GetMaxByteCount(text.Length)];
        int n = Encoding.UTF8.GetBytes(text, bytes);
        return string.Create(n, bytes[..n].ToArray(), static (chars, source) =>
        {
            for (int i = 0; i < source.Length; i++)
                chars[i] = byteToChar[source[i]];
        });
    }

    /// <summary>Back from the alphabet to bytes; a character outside it is kept as its UTF-8.</summary>
    public static byte[] Decode(string text)
    {
        var bytes = new List<byte>(text.Length);
        Span<byte> utf8 = stackalloc byte[4];
        foreach (var rune in text.EnumerateRunes())
        {
            if (rune.IsBmp && charToByte.TryGetValue((char)rune.Value, out var b))
            {
                bytes.Add(b);
                continue;
            }
            int n = rune.EncodeToUtf8(utf8);
            foreach (var x in utf8[..n])
                bytes.Add(x);
        }
        return bytes.ToArray();
    }
}
