using System.Text;
using SpeCache.Tokenizers;

namespace SpeCache.Tests.Tokenizers;

/// <summary>tinystories-656k's tokenizer.json: BPE with byte_fallback and the "▁" normalizer.</summary>
public class HfTokenizerTests
{
    static readonly BpeTokenizer Tok = HfTokenizer.Load(
        Path.Combine(TestPaths.TinyStories656K, "tokenizer.json"),
        Path.Combine(TestPaths.TinyStories656K, "tokenizer_config.json"));

    [Fact]
    public void VocabularyAndFlags()
    {
        Assert.Equal(2048, Tok.VocabSize);
        Assert.False(Tok.IsByteLevel);
        Assert.Equal(1, Tok.BosToken);   // <|start_story|>
        Assert.Equal(2, Tok.EosToken);   // <|end_story|>
        Assert.True(Tok.AddBos);
        Assert.True(Tok.Vocab.AddSpacePrefix);
        Assert.Equal(0, Tok.Vocab.Unk);
        Assert.True(Tok.IsEndOfGeneration(2));
        Assert.Equal(TokenType.Control, Tok.Vocab.Types[1]);
        Assert.Equal(TokenType.Unknown, Tok.Vocab.Types[0]);
    }

    [Fact]
    public void KnownIds()
    {
        // "a" is normalized to "▁a"; merge 4 is "▁ a", giving token 85.
        Assert.Equal([85], Tok.Encode("a", addBos: false));
        Assert.Equal([1, 85], Tok.Encode("a", addBos: true));
        Assert.Equal([], Tok.Encode("", addBos: false));
        Assert.Equal([1], Tok.Encode("", addBos: true));
    }

    [Fact]
    public void UnknownCharactersBecomeOneFusedUnk()
    {
        // The vocabulary has no <0xXX> tokens, so byte_fallback cannot apply: HF emits <unk>, one
        // for a run of unknown characters (fuse_unk).
        var ids = Tok.Encode("a é€", addBos: false);
        Assert.Equal(0, ids[^1]);
        Assert.Equal(1, CountOf(ids, 0));
        Assert.Equal(2, CountOf(Tok.Encode("é a €", addBos: false), 0));
    }

    static int CountOf(int[] ids, int id)
    {
        int n = 0;
        foreach (var x in ids)
            if (x == id) n++;
        return n;
    }

    [Theory]
    [InlineData("Once upon a time, there was a little girl named Lily.")]
    [InlineData("She liked to play with her ball!\n\"Mom, look!\" she said.")]
    [InlineData("  spaces   inside  ")]
    [InlineData("Tom had 3 apples and 12 cakes; he ate 1.")]
    public void RoundTripsThroughDecode(string text)
    {
        var ids = Tok.Encode(text, addBos: false);
        Assert.Equal(text, Tok.Decode(ids));
    }

    [Fact]
    public void SpecialTokenText()
    {
        var parsed = Tok.Encode("<|start_story|>Once upon a time<|end_story|>", addBos: false, parseSpecial: true);
        Assert.Equal(1, parsed[0]);
        Assert.Equal(2, parsed[^1]);
        Assert.Equal(1, CountOf(parsed, 1));
        var plain = Tok.Encode("<|start_story|>Once upon a time<|end_story|>", addBos: false, parseSpecial: false);
        Assert.DoesNotContain(2, plain);
        Assert.Equal("Once upon a time", Tok.Decode(parsed[1..^1]).TrimStart());
        // Control tokens print nothing.
        Assert.Empty(Tok.TokenBytes(1).ToArray());
    }

    /// <summary>Strings over the vocabulary's characters: words, punctuation, digits, whitespace runs, newlines.</summary>
    internal static List<string> VariedStrings(int count, int seed)
    {
        string[] words =
        [
            "Once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily", "Tim", "Ben", "Sue",
            "she", "he", "loved", "to", "play", "outside", "with", "her", "his", "big", "red", "ball", "dog", "cat",
            "sun", "happy", "sad", "said", "Mom", "Dad", "wanted", "help", "friend", "tree", "park", "and", "the",
            "went", "saw", "One", "day", "It", "They", "were", "very", "supercalifragilistic", "xylophone", "QUIZ",
            "zebra", "jumped", "I", "you", "can't", "don't", "it's", "won't", "Jack's", "fun", "a_b", "x|y", "<tag>",
        ];
        string[] separators = [" ", " ", " ", ", ", ". ", "! ", "? ", "\n", "\n\n", "  ", "   ", "; ", ": ", " - ", "\"", "'", "$", "0", "42", "1999", " 7 "];
        var random = new Random(seed);
        var list = new List<string> { "", " ", "\n", "  ", "a", "Once upon a time", " leading space", "trailing space ", "<|start_story|>" };
        while (list.Count < count)
        {
            var builder = new StringBuilder();
            int n = random.Next(1, 24);
            for (int i = 0; i < n; i++)
            {
                builder.Append(words[random.Next(words.Length)]);
                builder.Append(separators[random.Next(separators.Length)]);
            }
            list.Add(random.Next(4) == 0 ? builder.ToString().TrimEnd() : builder.ToString());
        }
        return list;
    }

    [Fact]
    public void SpmVocabWithMergeRankScoresGivesTheSameIds()
    {
        var meta = Tok.ToGgufMetadata();
        Assert.Equal("llama", meta["tokenizer.ggml.model"]);
        var spm = TokenizerFactory.FromGgufMetadata(meta);
        Assert.IsType<SpmTokenizer>(spm);
        Assert.Equal(Tok.BosToken, spm.BosToken);
        Assert.Equal(Tok.EosToken, spm.EosToken);
        Assert.True(spm.AddBos);
        // "▁a" (85) is made by merge 4.
        Assert.Equal(-4f, ((float[])meta["tokenizer.ggml.scores"])[85]);

        var failures = new StringBuilder();
        int failed = 0;
        var strings = VariedStrings(400, seed: 656);
        foreach (var text in strings)
        {
            var expected = Tok.Encode(text, addBos: true);
            var actual = spm.Encode(text, addBos: true);
            if (!expected.AsSpan().SequenceEqual(actual))
            {
                failed++;
                if (failed <= 10)
                    failures.AppendLine($"'{text}': bpe [{string.Join(' ', expected)}] spm [{string.Join(' ', actual)}]");
            }
            Assert.Equal(Tok.Decode(expected), spm.Decode(actual));
        }
        Assert.True(failed == 0, $"{failed} of {strings.Count} strings differ:\n{failures}");
    }

    [Fact]
    public void BadFiles()
    {
        var dir = TestPaths.Scratch("hf-tokenizer");
        var notJson = Path.Combine(dir, "broken.json");
        File.WriteAllText(notJson, "{ \"model\": ");
        Assert.Throws<InvalidDataException>(() => HfTokenizer.Load(notJson, null));
        var unigram = Path.Combine(dir, "unigram.json");
        File.WriteAllText(unigram, "{ \"model\": { \"type\": \"Unigram\", \"vocab\": [] } }");
        Assert.Throws<NotSupportedException>(() => HfTokenizer.Load(unigram, null));
    }
}
