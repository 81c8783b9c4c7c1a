using System.Buffers.Binary;
using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>
/// llama2.c's tokenizer file (<c>tokenizer.bin</c>, <c>tok512.bin</c>): an int32 max token length,
/// then per token a float32 score, an int32 byte length and the bytes. It is a SentencePiece
/// vocabulary exported with "▁" already turned into spaces; we turn it back and run the same SPM
/// tokenizer as for GGUF, so that a model converted to GGUF tokenizes the same in llama.cpp.
/// </summary>
public static class Llama2cTokenizer
{
    public static SentencePieceTokenizer Load(string path) => new(ReadVocabulary(path));

    /// <summary>llama2.c keeps the tokenizer apart: tokenizer.bin or a single tok*.bin beside the checkpoint.</summary>
    public static string FindBeside(string modelPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        string standard = Path.Combine(dir, "tokenizer.bin");
        if (File.Exists(standard)) return standard;
        var candidates = Directory.GetFiles(dir, "tok*.bin");
        if (candidates.Length == 1) return candidates[0];
        throw new FileNotFoundException($"{modelPath}: a llama2.c checkpoint needs its tokenizer (tokenizer.bin or tok*.bin beside it, or --tokenizer)");
    }

    public static Vocabulary ReadVocabulary(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        byte[] data = File.ReadAllBytes(path);
        if (data.Length < 4) throw new InvalidDataException($"{path}: not a llama2.c tokenizer (too short)");
        int maxLength = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxLength <= 0 || maxLength > 1024) throw new InvalidDataException($"{path}: not a llama2.c tokenizer (max token length {maxLength})");
        var tokens = new List<string>();
        var scores = new List<float>();
        var types = new List<TokenType>();
        int offset = 4;
        while (offset < data.Length)
        {
            if (offset + 8 > data.Length) throw new InvalidDataException($"{path}: truncated at token {tokens.Count}");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(offset));
            int length = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(offset + 4));
            offset += 8;
            if (length < 0 || length > maxLength || offset + length > data.Length)
                throw new InvalidDataException($"{path}: token {tokens.Count} has an invalid length {length}");
            string text = Encoding.UTF8.GetString(data, offset, length);
            offset += length;
            int id = tokens.Count;
            // llama2.c's fixed layout: 0 <unk>, 1 <s>, 2 </s>, then the 256 byte tokens.
            var type = id switch
            {
                0 => TokenType.Unknown,
                1 or 2 => TokenType.Control,
                _ when text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text.EndsWith('>') => TokenType.Byte,
                _ => TokenType.Normal,
            };
            tokens.Add(type is TokenType.Normal ? text.Replace(' ', '\u2581') : text);
            scores.Add(score);
            types.Add(type);
        }
        if (tokens.Count < 3) throw new InvalidDataException($"{path}: a tokenizer needs at least <unk>, <s> and </s>");
        return new Vocabulary(tokens.ToArray(), scores.ToArray(), types.ToArray()) { Bos = 1, Eos = 2, Unknown = 0, AddBos = true, AddSpacePrefix = true };
    }
}
