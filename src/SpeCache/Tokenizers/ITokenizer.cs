namespace SpeCache.Tokenizers;

/// <summary>Text to token ids and back, the way the model was trained to see it.</summary>
public interface ITokenizer
{
    int VocabSize { get; }
    /// <summary>Beginning-of-sequence id, or -1 if the vocabulary has none.</summary>
    int BosToken { get; }
    /// <summary>End-of-sequence id, or -1.</summary>
    int EosToken { get; }
    /// <summary>Whether a prompt should start with <see cref="BosToken"/> (tokenizer.ggml.add_bos_token).</summary>
    bool AddBos { get; }

    /// <summary>
    /// SentencePiece-style: a space is put before the text, so a decoded piece right after BOS starts
    /// with a space that is not part of the text (llama2.c strips it).
    /// </summary>
    bool AddsSpacePrefix { get; }

    /// <summary>Ids that end generation (EOS, EOT, &lt;|im_end|&gt;, &lt;|eot_id|&gt;, ...).</summary>
    bool IsEndOfGeneration(int token);

    /// <summary>
    /// Encodes <paramref name="text"/>. With <paramref name="parseSpecial"/>, the text of special
    /// tokens (e.g. <c>&lt;|im_start|&gt;</c>) becomes those tokens, as in llama.cpp's <c>parse_special</c>.
    /// </summary>
    int[] Encode(string text, bool addBos, bool parseSpecial = false);

    /// <summary>
    /// The raw bytes of one token as it appears in output text (byte tokens give their byte, SPM
    /// "▁" gives a space, control tokens give nothing). Streaming output concatenates these and
    /// decodes whole UTF-8 sequences.
    /// </summary>
    ReadOnlySpan<byte> TokenBytes(int token);

    /// <summary>The vocabulary string of a token (for <c>info</c> and debugging).</summary>
    string TokenText(int token);

    /// <summary>Decodes a token sequence into text.</summary>
    string Decode(ReadOnlySpan<int> tokens);
}
