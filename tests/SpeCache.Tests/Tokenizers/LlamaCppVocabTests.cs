using System.Text;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Tokenizers;

namespace SpeCache.Tests.Tokenizers;

/// <summary>
/// llama.cpp's own tokenizer vectors (tests/test-tokenizer-0.cpp): each input of
/// models/ggml-vocab-*.gguf.inp, encoded without BOS and without parse_special, must give the ids
/// on the matching line of the .gguf.out file.
/// </summary>
public class LlamaCppVocabTests
{
    static string VocabPath(string name) => Path.Combine(TestPaths.LlamaCppSource, "models", $"ggml-vocab-{name}.gguf");

    static TokenizerBase LoadVocab(string name)
    {
        using var gguf = GgufFile.Open(VocabPath(name));
        return TokenizerFactory.FromGgufMetadata(gguf.Metadata);
    }

    /// <summary>Inputs separated by "\n__ggml_vocab_test__\n", outputs one line of ids each, as read_tests does.</summary>
    internal static List<(string Input, int[] Expected)> ReadVectors(string name)
    {
        string raw = File.ReadAllText(VocabPath(name) + ".inp", Encoding.UTF8);
        var outputs = File.ReadAllLines(VocabPath(name) + ".out");
        const string separator = "\n__ggml_vocab_test__\n";
        var inputs = new List<string>();
        int position = 0;
        while (position < raw.Length)
        {
            int next = raw.IndexOf(separator, position, StringComparison.Ordinal);
            if (next < 0)
            {
                inputs.Add(raw[position..]);
                break;
            }
            inputs.Add(raw[position..next]);
            position = next + separator.Length;
        }
        Assert.Equal(inputs.Count, outputs.Length);
        var vectors = new List<(string, int[])>();
        for (int i = 0; i < inputs.Count; i++)
        {
            var ids = outputs[i].Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            vectors.Add((inputs[i], Array.ConvertAll(ids, int.Parse)));
        }
        return vectors;
    }

    [Theory]
    [InlineData("llama-spm")]
    [InlineData("llama-bpe")]
    [InlineData("qwen2")]
    public void EveryVectorMatches(string name)
    {
        var tokenizer = LoadVocab(name);
        var vectors = ReadVectors(name);
        var failures = new StringBuilder();
        int failed = 0;
        foreach (var (input, expected) in vectors)
        {
            var actual = tokenizer.Encode(input, addBos: false, parseSpecial: false);
            if (!actual.AsSpan().SequenceEqual(expected))
            {
                failed++;
                failures.AppendLine($"'{input}': expected [{string.Join(' ', expected)}] got [{string.Join(' ', actual)}]");
            }
        }
        Assert.True(failed == 0, $"{failed} of {vectors.Count} vectors differ:\n{failures}");
    }

    [Theory]
    [InlineData("llama-spm")]
    [InlineData("llama-bpe")]
    [InlineData("qwen2")]
    public void ExpectedIdsDecodeBackToTheInput(string name)
    {
        // llama.cpp's test prints common_detokenize of the ids; for these vocabularies it gives the
        // input back except where clean_spaces (llama-bpe) rewrites " ." and friends, or SPM's
        // space prefix ate a leading space.
        var tokenizer = LoadVocab(name);
        foreach (var (input, expected) in ReadVectors(name))
        {
            string decoded = tokenizer.Decode(expected);
            if (name == "llama-bpe" && decoded != input)
                continue;
            Assert.Equal(input, decoded);
        }
    }

    [Fact]
    public void SpmSpecialTokensAndSpacePrefix()
    {
        var tok = LoadVocab("llama-spm");
        Assert.True(tok.AddBos);
        Assert.True(tok.AddsSpacePrefix);
        Assert.Equal([1, 15043], tok.Encode("Hello", addBos: true)); // "▁Hello"
        // With parseSpecial "</s>" is EOS, and the text after a special token gets the space prefix again.
        var parsed = tok.Encode("Hello</s>Hello", addBos: false, parseSpecial: true);
        Assert.Equal([15043, 2, 15043], parsed);
        Assert.DoesNotContain(2, tok.Encode("Hello</s>Hello", addBos: false, parseSpecial: false));
        Assert.True(tok.IsEndOfGeneration(2));
        // llama_detokenize(remove_special = false): BOS prints nothing but uses up the removal of
        // the first piece's leading space, so the prefix space stays.
        Assert.Equal(" Hello", tok.Decode([1, 15043]));
        Assert.Equal("Hello", tok.Decode([15043]));
        Assert.Equal("Hello Hello", tok.Decode(parsed)); // EOS prints nothing; the second "▁Hello" keeps its space
        // Byte fallback: U+10FFFF is no token, its four UTF-8 bytes are <0xF4> <0x8F> <0xBF> <0xBF> (byte + 3).
        var bytes = tok.Encode("\U0010FFFF", addBos: false);
        Assert.Equal([29871, 0xF4 + 3, 0x8F + 3, 0xBF + 3, 0xBF + 3], bytes);
        Assert.Equal("\U0010FFFF", tok.Decode(bytes));
    }
}
