using System.Text.Json;

namespace SpeCache.Tests.Cli;

public class GenerateCliTests
{
    [Fact]
    public void DefaultModelTellsTheReferenceStory()
    {
        var result = CliRunner.Run("generate", "--temperature", "0", "-n", "200");
        Assert.Equal(0, result.ExitCode);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", result.StdOut);
        Assert.Contains("tokens/s", result.StdErr);
    }

    [Fact]
    public void JsonReportsTokensAndSpeed()
    {
        var result = CliRunner.Run("generate", "--temperature", "0", "-n", "20", "--json", "-p", "Once upon a time");
        Assert.Equal(0, result.ExitCode);
        using var doc = JsonDocument.Parse(result.StdOut);
        var root = doc.RootElement;
        Assert.Equal(20, root.GetProperty("generated_tokens").GetInt32());
        Assert.Equal("Length", root.GetProperty("finish_reason").GetString());
        Assert.True(root.GetProperty("decode_tokens_per_second").GetDouble() > 0);
        Assert.False(string.IsNullOrWhiteSpace(root.GetProperty("text").GetString()));
    }

    [Fact]
    public void PromptFromStandardInput()
    {
        var fromStdin = CliRunner.RunWithInput("Once upon a time", "generate", "--temperature", "0", "-n", "12");
        var fromOption = CliRunner.Run("generate", "--temperature", "0", "-n", "12", "-p", "Once upon a time");
        Assert.Equal(0, fromStdin.ExitCode);
        Assert.Equal(fromOption.StdOut, fromStdin.StdOut);
    }

    [Fact]
    public void SameSeedSameText()
    {
        var a = CliRunner.Run("generate", "-n", "40", "--seed", "7");
        var b = CliRunner.Run("generate", "-n", "40", "--seed", "7");
        Assert.Equal(0, a.ExitCode);
        Assert.Equal(a.StdOut, b.StdOut);
    }

    [Fact]
    public void PromptLongerThanTheContextIsOneLine()
    {
        string prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 20));
        var result = CliRunner.Run("generate", "--ctx", "32", "-p", prompt);
        CliRunner.AssertOneLineError(result, "the context has room for 32");
    }

    [Fact]
    public void MissingModelIsOneLine()
    {
        var result = CliRunner.Run("generate", "-m", Path.Combine(TestPaths.Scratch("cli"), "no-such-model.gguf"));
        CliRunner.AssertOneLineError(result, "model file not found");
    }

    [Fact]
    public void TruncatedGgufIsOneLine()
    {
        string path = Path.Combine(TestPaths.Scratch("cli"), "truncated.gguf");
        byte[] bytes = File.ReadAllBytes(TestPaths.Llama2TinyRandom);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 3)]);
        var result = CliRunner.Run("generate", "-m", path, "-n", "4");
        CliRunner.AssertOneLineError(result, "truncated.gguf");
    }

    [Fact]
    public void WrongMagicIsOneLine()
    {
        string path = Path.Combine(TestPaths.Scratch("cli"), "wrong-magic.gguf");
        byte[] bytes = File.ReadAllBytes(TestPaths.Llama2TinyRandom);
        "GGML"u8.CopyTo(bytes);
        File.WriteAllBytes(path, bytes);
        var result = CliRunner.Run("info", "-m", path);
        CliRunner.AssertOneLineError(result, "not a GGUF file");
    }

    [Fact]
    public void InfoDescribesTheDefaultModel()
    {
        var result = CliRunner.Run("info", "--json");
        Assert.Equal(0, result.ExitCode);
        using var doc = JsonDocument.Parse(result.StdOut);
        var root = doc.RootElement;
        Assert.Equal("llama2c", root.GetProperty("format").GetString());
        Assert.Equal(5, root.GetProperty("layers").GetInt32());
        // full F16 cache: 2 (K and V) x 5 layers x 4 KV heads x 8 head dim x 2 bytes
        Assert.Equal(2 * 5 * 32 * 2, root.GetProperty("kv_bytes_per_token").GetProperty("full f16").GetInt64());
    }
}

public class CommandLineErrorTests
{
    [Theory]
    [InlineData("generate", "--kv", "bogus")]
    [InlineData("generate", "--threads", "many")]
    [InlineData("generate", "--no-such-option")]
    [InlineData("no-such-command")]
    public void BadArgumentsAreOneLine(params string[] args)
    {
        var result = CliRunner.Run(args);
        Assert.Equal(2, result.ExitCode);
        var lines = result.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("specache: error: ", lines[0]);
    }

    [Fact]
    public void NegativeMaxTokensIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run("generate", "-n", "-5"), "--max-tokens must not be negative");

    [Fact]
    public void KiviBitsOutsideTheirRangeAreOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run("generate", "-m", TestPaths.TinyStories656K, "--kv", "kivi", "--kv-bits", "3"), "KIVI bits must be 1, 2 or 4");
}

public class UnsupportedModelCliTests
{
    [Fact]
    public void QuantTypeWeDoNotComputeIsOneLine()
    {
        // A real llama.cpp quantization to a type outside our kernels (Q5_K_M: Q5_K and Q6_K tensors).
        string dir = TestPaths.Scratch("cli-unsupported");
        string f16 = Path.Combine(dir, "random-f16.gguf");
        string q5 = Path.Combine(dir, "random-q5_k_m.gguf");
        if (!File.Exists(q5))
        {
            SpeCache.LlamaCpp.RandomLlamaWriter.Write(f16, TestPaths.Llama2TinyRandom,
                new SpeCache.LlamaCpp.RandomLlamaShape(EmbeddingLength: 256, LayerCount: 1, HeadCount: 4, KvHeadCount: 4, FeedForwardLength: 512, ContextLength: 256));
            SpeCache.LlamaCpp.LlamaCppQuantizer.Quantize(f16, q5, SpeCache.LlamaCpp.LlamaFtype.Q5_K_M, threads: 1);
        }
        var result = CliRunner.Run("generate", "-m", q5, "-n", "2");
        CliRunner.AssertOneLineError(result, "Q5_K, which is not supported");
    }

    [Fact]
    public void ArchitectureWeDoNotSupportIsOneLine()
    {
        string dir = TestPaths.Scratch("cli-unsupported");
        string path = Path.Combine(dir, "gpt2-arch.gguf");
        using (var source = SpeCache.ModelFiles.Gguf.GgufFile.Open(TestPaths.Llama2TinyRandom))
        using (var writer = new SpeCache.ModelFiles.Gguf.GgufWriter(path))
        {
            foreach (var key in source.MetadataKeys)
                writer.SetMetadata(key.Replace("llama.", "gpt2.", StringComparison.Ordinal), key == "general.architecture" ? "gpt2" : source.Metadata[key]);
            foreach (var t in source.TensorsInFileOrder) writer.AddTensor(t.Name, t.Type, t.Shape);
            foreach (var t in source.TensorsInFileOrder) writer.WriteTensorData(t.Bytes);
            writer.Finish();
        }
        var result = CliRunner.Run("info", "-m", path);
        CliRunner.AssertOneLineError(result, "architecture 'gpt2' is not supported");
    }
}
