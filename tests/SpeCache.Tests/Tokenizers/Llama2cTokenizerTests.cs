using SpeCache.Tokenizers;

namespace SpeCache.Tests.Tokenizers;

public class Llama2cTokenizerTests
{
    static readonly SpmTokenizer Tok = Llama2cTokenizer.Load(TestPaths.Stories260KTokenizer);

    [Fact]
    public void VocabularyShape()
    {
        Assert.Equal(512, Tok.VocabSize);
        Assert.Equal(1, Tok.BosToken);
        Assert.Equal(2, Tok.EosToken);
        Assert.True(Tok.AddBos);
        Assert.True(Tok.IsEndOfGeneration(2));
        Assert.False(Tok.IsEndOfGeneration(1));
        // The exporter's "\n<s>\n" / " t" are read back as SentencePiece spells them.
        Assert.Equal("<s>", Tok.TokenText(1));
        Assert.Equal("▁t", Tok.TokenText(259));
    }

    [Fact]
    public void KnownIds()
    {
        // tok512.bin (read with a few lines of Python): 259 " t" score 0, 260 "he" -1, 261 " a" -2,
        // 265 " the" -6, 308 " th" -49; "th" is no token.
        // "a": the dummy prefix makes "▁a", which is token 261.
        Assert.Equal([261], Tok.Encode("a", addBos: false));
        // "the" -> "▁","t","h","e": best pair "▁t" (0), then "he" (-1) beats "▁th" (-49),
        // then "▁t"+"he" = "▁the" (265).
        Assert.Equal([265], Tok.Encode("the", addBos: false));
        // Bytes without a token fall back to id = byte + 3: tab is 0x09 -> 12, newline 0x0A -> 13.
        Assert.Equal([1, 259, 412, 430, 12, 260, 276, 13, 416, 411, 424], Tok.Encode("tab\there\nnew", addBos: true));
        // The same ids llama2.c's encode gives (checked against a transcription of run.c's encode).
        Assert.Equal([1, 403, 407, 261, 378], Tok.Encode("Once upon a time", addBos: true));
        Assert.Equal([403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426],
            Tok.Encode("Once upon a time, there was a little girl named Lily.", addBos: false));
        Assert.Equal([346, 306, 414, 410, 231, 187, 153, 234, 152, 143, 410, 243, 162, 169, 156],
            Tok.Encode("Hello 世界 🦙", addBos: false));
    }

    [Theory]
    [InlineData("Once upon a time")]
    [InlineData("Once upon a time, there was a little girl named Lily. She loved to play outside!")]
    [InlineData("Hello 世界 🦙 — naïve café")]
    [InlineData("  two leading spaces, trailing  ")]
    [InlineData("tabs\tand\nnewlines\n\n")]
    [InlineData("")]
    public void RoundTripsThroughDecode(string text)
    {
        var ids = Tok.Encode(text, addBos: false);
        Assert.Equal(text, Tok.Decode(ids));
        // With BOS first, llama.cpp's detokenize keeps the prefix space (BOS prints nothing but
        // uses up the "remove leading space" of the first token).
        var withBos = Tok.Encode(text, addBos: true);
        Assert.Equal(1, withBos[0]);
        Assert.Equal(text.Length == 0 ? "" : " " + text, Tok.Decode(withBos));
    }

    [Fact]
    public void TokenBytes()
    {
        Assert.Equal(" t"u8.ToArray(), Tok.TokenBytes(259).ToArray());
        Assert.Equal(new byte[] { 0xE4 }, Tok.TokenBytes(0xE4 + 3).ToArray());
        Assert.Empty(Tok.TokenBytes(1).ToArray());
        Assert.Empty(Tok.TokenBytes(0).ToArray());
    }

    [Fact]
    public void SpecialTextIsPlainTextUnlessParsed()
    {
        Assert.Equal([1, 346, 306, 414], Tok.Encode("<s>Hello", addBos: false, parseSpecial: true));
        Assert.DoesNotContain(1, Tok.Encode("<s>Hello", addBos: false, parseSpecial: false));
    }

    [Fact]
    public void GgufMetadataRoundTrip()
    {
        var meta = Tok.ToGgufMetadata();
        Assert.Equal("llama", meta["tokenizer.ggml.model"]);
        Assert.Equal(512, ((string[])meta["tokenizer.ggml.tokens"]).Length);
        Assert.Equal(6, ((int[])meta["tokenizer.ggml.token_type"])[3]);
        var again = TokenizerFactory.FromGgufMetadata(meta);
        Assert.IsType<SpmTokenizer>(again);
        string text = "Once upon a time, there was a little girl named Lily. 🦙\tok";
        Assert.Equal(Tok.Encode(text, true), again.Encode(text, true));
    }

    [Fact]
    public void CorruptFilesAreInvalidData()
    {
        var dir = TestPaths.Scratch("llama2c-tokenizer");
        var bytes = File.ReadAllBytes(TestPaths.Stories260KTokenizer);
        var truncated = Path.Combine(dir, "truncated.bin");
        File.WriteAllBytes(truncated, bytes[..(bytes.Length - 3)]);
        Assert.Throws<InvalidDataException>(() => Llama2cTokenizer.Load(truncated));
        var garbage = Path.Combine(dir, "garbage.bin");
        File.WriteAllBytes(garbage, [0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3]);
        Assert.Throws<InvalidDataException>(() => Llama2cTokenizer.Load(garbage));
    }
}
