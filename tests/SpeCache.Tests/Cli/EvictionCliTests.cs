namespace SpeCache.Tests.Cli;

public class EvictionCliTests
{
    [Theory]
    [InlineData("streaming", "--kv-window", "28")]
    [InlineData("h2o", "--kv-budget", "64KiB")]
    public void EvictionPoliciesGenerate(string policy, string option, string value)
    {
        var result = CliRunner.Run("generate", "-m", TestPaths.TinyStories656K, "--temperature", "0", "-n", "60", "-p", "Once upon a time", "--kv", policy, option, value);
        Assert.True(result.ExitCode == 0, result.StdErr);
        Assert.Contains("60 tokens", result.StdErr);
        Assert.True(result.StdOut.Split(' ').Length > 20, result.StdOut);
    }

    [Theory]
    [InlineData("12XB")]
    [InlineData("-5MiB")]
    [InlineData("MiB")]
    public void ABadBudgetIsAParseErrorInOneLine(string budget)
    {
        var result = CliRunner.Run("generate", "--kv", "streaming", "--kv-budget", budget);
        Assert.Equal(2, result.ExitCode);
        CliRunner.AssertOneLineError(result, $"--kv-budget: '{budget}' is not a positive byte count");
    }

    [Fact]
    public void ABudgetTooSmallIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run("generate", "-m", TestPaths.TinyStories656K, "--kv", "h2o", "--kv-budget", "1KB"),
            "a KV budget of 1,000 bytes holds 1 tokens of 576 bytes, but h2o needs 66");

    [Fact]
    public void AFullCacheOverTheBudgetIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run("generate", "-m", TestPaths.TinyStories656K, "--kv-budget", "10KB"),
            "the full KV cache needs 256 KiB of fast tier for a context of 512 tokens, more than the budget of 9.77 KiB");
}
