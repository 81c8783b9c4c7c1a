using System.Text;
using System.Text.Json;
using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Tokenizers;

namespace SpeCache.Tests.Tokenizers;

/// <summary>
/// Byte-level BPE (Llama 3, Qwen2) from llama.cpp's ggml-vocab files: special tokens, end of
/// generation, decode, and the same vocabularies written as Hugging Face tokenizer.json and as
/// GGUF metadata, which must tokenize llama.cpp's vectors identically.
/// </summary>
public class ByteLevelBpeTests
{
    static string VocabPath(string name) => Path.Combine(TestPaths.LlamaCppSource, "models", $"ggml-vocab-{name}.gguf");

    static IReadOnlyDictionary<string, object> Metadata(string name)
    {
        using var gguf = GgufFile.Open(VocabPath(name));
        return new Dictionary<string, object>(gguf.Metadata);
    }

    static readonly TokenizerBase Llama3 = TokenizerFactory.FromGgufMetadata(Metadata("llama-bpe"));
    static readonly TokenizerBase Qwen2 = TokenizerFactory.FromGgufMetadata(Metadata("qwen2"));

    [Fact]
    public void Llama3SpecialTokens()
    {
        Assert.Equal(128000, Llama3.BosToken);
        Assert.True(Llama3.AddBos);
        const string text = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
        var parsed = Llama3.Encode(text, addBos: false, parseSpecial: true);
        Assert.Equal(128000, parsed[0]);
        Assert.Equal(128006, parsed[1]);
        Assert.Equal(128009, parsed[^1]);
        // Without parseSpecial the markers are ordinary text.
        var plain = Llama3.Encode(text, addBos: false, parseSpecial: false);
        Assert.DoesNotContain(128000, plain);
        Assert.DoesNotContain(128009, plain);
        Assert.Equal(text, Llama3.Decode(plain));
        // Control tokens print nothing.
        Assert.Equal("user\n\nHi", Llama3.Decode(parsed));
        Assert.True(Llama3.IsEndOfGeneration(Llama3.Vocab.Find("<|eot_id|>")));
        Assert.True(Llama3.IsEndOfGeneration(Llama3.Vocab.Find("<|end_of_text|>")));
        Assert.False(Llama3.IsEndOfGeneration(128000));
        Assert.False(Llama3.IsEndOfGeneration(Llama3.Encode("Hi", false)[0]));
    }

    [Fact]
    public void Qwen2SpecialTokens()
    {
        int imStart = Qwen2.Vocab.Find("<|im_start|>"), imEnd = Qwen2.Vocab.Find("<|im_end|>");
        var parsed = Qwen2.Encode("<|im_start|>user\nhello<|im_end|>", addBos: false, parseSpecial: true);
        Assert.Equal(imStart, parsed[0]);
        Assert.Equal(imEnd, parsed[^1]);
        Assert.True(Qwen2.IsEndOfGeneration(imEnd));
        Assert.True(Qwen2.IsEndOfGeneration(Qwen2.Vocab.Find("<|endoftext|>")));
        Assert.False(Qwen2.IsEndOfGeneration(imStart));
    }

    [Theory]
    [InlineData("")]
    [InlineData(" ")]
    [InlineData("\t\t\n \n")]
    [InlineData("Hello world! 123456789 ")]
    [InlineData("🦙🦙 emoji 👍🏽 and ZWJ 👨‍👩‍👧")]
    [InlineData("中文 日本語 한국어 Ελληνικά العربية")]
    [InlineData("    indented\n\tcode();\r\n")]
    public void UnicodeAndWhitespaceRoundTrip(string text)
    {
        foreach (var tok in new[] { Llama3, Qwen2 })
        {
            var ids = tok.Encode(text, addBos: false);
            Assert.Equal(text.Length == 0, ids.Length == 0);
            // Qwen2 has no clean_spaces; Llama 3's only touches " ." and friends, absent here.
            Assert.Equal(text, tok.Decode(ids));
        }
    }

    [Fact]
    public void TokenBytesUndoTheByteAlphabet()
    {
        int space = Llama3.Vocab.Find("Ġ");
        Assert.Equal(" "u8.ToArray(), Llama3.TokenBytes(space).ToArray());
        int newline = Llama3.Vocab.Find("Ċ");
        Assert.Equal("\n"u8.ToArray(), Llama3.TokenBytes(newline).ToArray());
    }

    [Fact]
    public void CleanSpacesOnlyForLlama3()
    {
        var ids = Llama3.Encode("Hello , world .", false);
        Assert.Equal("Hello, world.", Llama3.Decode(ids));
        Assert.Equal("Hello , world .", Qwen2.Decode(Qwen2.Encode("Hello , world .", false)));
    }

    [Fact]
    public void UnknownModelAndPreAreNotSupported()
    {
        var meta = new Dictionary<string, object>(Metadata("qwen2")) { ["tokenizer.ggml.pre"] = "no-such-pre" };
        Assert.Throws<NotSupportedException>(() => TokenizerFactory.FromGgufMetadata(meta));
        meta["tokenizer.ggml.model"] = "t5";
        Assert.Throws<NotSupportedException>(() => TokenizerFactory.FromGgufMetadata(meta));
        // A missing pre is llama.cpp's "default" regex set.
        meta = new Dictionary<string, object>(Metadata("qwen2"));
        meta.Remove("tokenizer.ggml.pre");
        Assert.NotEmpty(TokenizerFactory.FromGgufMetadata(meta).Encode("Hello world", false));
        meta["tokenizer.ggml.token_type"] = new int[3];
        Assert.Throws<InvalidDataException>(() => TokenizerFactory.FromGgufMetadata(meta));
    }

    /// <summary>Writes a GGUF byte-level vocabulary as a tokenizer.json the way Llama 3 / Qwen2 ship it.</summary>
    static string WriteTokenizerJson(string name, string splitRegex)
    {
        var meta = Metadata(name);
        var tokens = meta.GetArray<string>("tokenizer.ggml.tokens");
        var types = meta.GetArray<int>("tokenizer.ggml.token_type");
        var merges = meta.GetArray<string>("tokenizer.ggml.merges");
        var path = Path.Combine(TestPaths.Scratch("hf-bytelevel"), name + ".tokenizer.json");
        using (var stream = File.Create(path))
        using (var json = new Utf8JsonWriter(stream))
        {
            json.WriteStartObject();
            json.WriteStartArray("added_tokens");
            for (int i = 0; i < tokens.Length; i++)
            {
                if (types[i] is not ((int)TokenType.Control or (int)TokenType.UserDefined))
                    continue;
                json.WriteStartObject();
                json.WriteNumber("id", i);
                json.WriteString("content", tokens[i]);
                json.WriteBoolean("special", types[i] == (int)TokenType.Control);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteNull("normalizer");
            json.WriteStartObject("pre_tokenizer");
            json.WriteString("type", "Sequence");
            json.WriteStartArray("pretokenizers");
            json.WriteStartObject();
            json.WriteString("type", "Split");
            json.WriteStartObject("pattern");
            json.WriteString("Regex", splitRegex);
            json.WriteEndObject();
            json.WriteString("behavior", "Isolated");
            json.WriteEndObject();
            json.WriteStartObject();
            json.WriteString("type", "ByteLevel");
            json.WriteBoolean("use_regex", false);
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteStartObject("decoder");
            json.WriteString("type", "ByteLevel");
            json.WriteEndObject();
            json.WriteStartObject("model");
            json.WriteString("type", "BPE");
            json.WriteBoolean("ignore_merges", name == "llama-bpe");
            json.WriteStartObject("vocab");
            for (int i = 0; i < tokens.Length; i++)
                if (types[i] is not ((int)TokenType.Control or (int)TokenType.UserDefined))
                    json.WriteNumber(tokens[i], i);
            json.WriteEndObject();
            json.WriteStartArray("merges");
            foreach (var merge in merges)
                json.WriteStringValue(merge);
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return path;
    }

    const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    [Theory]
    [InlineData("llama-bpe", Llama3Regex)]
    [InlineData("qwen2", Qwen2Regex)]
    public void TokenizerJsonMatchesLlamaCppVectors(string name, string regex)
    {
        var tok = HfTokenizer.Load(WriteTokenizerJson(name, regex), null);
        Assert.True(tok.IsByteLevel);
        var failures = new StringBuilder();
        foreach (var (input, expected) in LlamaCppVocabTests.ReadVectors(name))
        {
            var actual = tok.Encode(input, addBos: false);
            if (!actual.AsSpan().SequenceEqual(expected))
                failures.AppendLine($"'{input}': expected [{string.Join(' ', expected)}] got [{string.Join(' ', actual)}]");
        }
        Assert.True(failures.Length == 0, failures.ToString());
        // ToGgufMetadata names the pre-tokenizer llama.cpp knows this regex by.
        var meta = tok.ToGgufMetadata();
        Assert.Equal("gpt2", meta["tokenizer.ggml.model"]);
        Assert.Equal(name, meta["tokenizer.ggml.pre"]);
    }

    [Theory]
    [InlineData("llama-bpe")]
    [InlineData("qwen2")]
    [InlineData("llama-spm")]
    public void GgufFileRoundTripKeepsTheVectors(string name)
    {
        var original = TokenizerFactory.FromGgufMetadata(Metadata(name));
        var path = Path.Combine(TestPaths.Scratch("tokenizer-gguf"), name + ".gguf");
        using (var writer = new GgufWriter(path))
        {
            writer.SetMetadata("general.architecture", "llama");
            foreach (var (key, value) in original.ToGgufMetadata())
                writer.SetMetadata(key, value);
            writer.Finish();
        }
        using var gguf = GgufFile.Open(path);
        var reread = TokenizerFactory.FromGgufMetadata(gguf.Metadata);
        Assert.Equal(original.VocabSize, reread.VocabSize);
        Assert.Equal(original.BosToken, reread.BosToken);
        Assert.Equal(original.AddBos, reread.AddBos);
        foreach (var (input, expected) in LlamaCppVocabTests.ReadVectors(name))
            Assert.Equal(expected, reread.Encode(input, addBos: false));
    }
}
