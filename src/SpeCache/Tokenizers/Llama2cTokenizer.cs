using System.Text;

namespace SpeCache.Tokenizers;

/// <summary>
/// llama2.c's tokenizer.bin (e.g. tok512.bin): int32 max_token_length, then per token float32
/// score, int32 byte length, UTF-8 bytes. Ids 0-2 are unk, BOS, EOS; 3-258 the byte tokens
/// (llama2.c's byte fallback is id = byte + 3). llama2.c's encode (dummy-prefix space, then merge
/// the best-scoring adjacent pair, leftmost first) is SPM, so the result is an
/// <see cref="SpmTokenizer"/> over a vocabulary rewritten the way llama.cpp expects it.
/// </summary>
public static class Llama2cTokenizer
{
    public static SpmTokenizer Load(string path)
    {
        byte[] data;
        try
        {
            data = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            throw new FileNotFoundException($"llama2.c tokenizer not found: {path}", path);
        }
        if (data.Length < 4)
            throw new InvalidDataException($"{path}: too short for a llama2.c tokenizer");
        int maxTokenLength = BitConverter.ToInt32(data, 0);
        if (maxTokenLength <= 0 || maxTokenLength > 1 << 16)
            throw new InvalidDataException($"{path}: max_token_length {maxTokenLength} is not plausible for a llama2.c tokenizer");

        var tokens = new List<string>();
        var scores = new List<float>();
        var utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
        int offset = 4;
        while (offset < data.Length)
        {
            if (offset + 8 > data.Length)
                throw new InvalidDataException($"{path}: truncated at token {tokens.Count}");
            float score = BitConverter.ToSingle(data, offset);
            int length = BitConverter.ToInt32(data, offset + 4);
            offset += 8;
            if (length < 0 || length > maxTokenLength || offset + length > data.Length)
                throw new InvalidDataException($"{path}: token {tokens.Count} has length {length} (max_token_length {maxTokenLength}, {data.Length - offset} bytes left)");
            string text;
            try
            {
                text = utf8.GetString(data, offset, length);
            }
            catch (DecoderFallbackException)
            {
                throw new InvalidDataException($"{path}: token {tokens.Count} is not valid UTF-8");
            }
            offset += length;
            tokens.Add(text);
            scores.Add(score);
        }
        if (tokens.Count < 259)
            throw new InvalidDataException($"{path}: {tokens.Count} tokens, a llama2.c vocabulary has at least 259 (unk, BOS, EOS, 256 bytes)");

        // llama2.c's exporter replaced SentencePiece's "▁" by " " and wrote BOS/EOS as "\n<s>\n" and
        // "\n</s>\n"; undo both so the vocabulary reads like a SentencePiece one (and like what
        // llama.cpp's convert-llama2c writes).
        var types = new TokenType[tokens.Count];
        for (int i = 0; i < tokens.Count; i++)
        {
            if (i == 0)
                types[i] = TokenType.Unknown;
            else if (i is 1 or 2)
            {
                types[i] = TokenType.Control;
                tokens[i] = i == 1 ? "<s>" : "</s>";
            }
            else if (i < 259)
                types[i] = TokenType.Byte;
            else
            {
                types[i] = TokenType.Normal;
                tokens[i] = tokens[i].Replace(' ', '▁');
            }
        }
        var vocab = new Vocabulary(tokens.ToArray(), scores.ToArray(), types)
        {
            Unk = 0,
            Bos = 1,
            Eos = 2,
            AddBos = true,
            AddSpacePrefix = true,
        };
        return new SpmTokenizer(vocab);
    }
}
