using System.Diagnostics;
using System.Text.Json;

namespace SpeCache.Tests.Cli;

public class SpeCacheCliTests
{
    static readonly string[] Greedy = ["generate", "-m", TestPaths.TinyStories656K, "-p", "Once upon a time", "--temperature", "0", "-n", "60", "--ignore-eos"];

    [Fact]
    public void StatsArePrintedAndSavedAsJson()
    {
        string json = Path.Combine(TestPaths.Scratch("cli-stats"), $"{Guid.NewGuid():N}.json");
        // 200 tokens: past the residual window, so top-k has low-bit positions to choose from.
        var result = CliRunner.Run([.. Greedy[..^3], "-n", "200", "--ignore-eos", "--kv", "specache", "--kv-topk", "8", "--kv-speculation", "on", "--stats", "--stats-json", json]);
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("kv cache specache:", result.StdErr);
        Assert.Contains("prefetch_hit_rate", result.StdErr);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var root = doc.RootElement;
        Assert.Equal("specache", root.GetProperty("policy").GetString());
        Assert.True(root.GetProperty("host_tier_bytes").GetInt64() > 0);
        Assert.InRange(root.GetProperty("prefetch_hit_rate").GetDouble(), 0.05, 1.0);
        Assert.Equal(200, root.GetProperty("speculative_tokens").GetInt64() + 1); // every token but the first was guessed
    }

    [Fact]
    public void SpeCacheWithTheWholeContextInTopKWritesWhatFullWrites()
    {
        var full = CliRunner.Run([.. Greedy, "--kv", "full"]);
        var spe = CliRunner.Run([.. Greedy, "--kv", "specache", "--kv-topk", "512"]);
        Assert.Equal(0, full.ExitCode);
        Assert.Equal(0, spe.ExitCode);
        Assert.Equal(full.StdOut, spe.StdOut);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AutomaticSpeculationFollowsTheHostTier(bool slowLink)
    {
        string json = Path.Combine(TestPaths.Scratch("cli-stats"), $"{Guid.NewGuid():N}.json");
        string[] link = slowLink ? ["--host-latency", "5us"] : [];
        var result = CliRunner.Run([.. Greedy, "--kv", "specache", .. link, "--stats-json", json]);
        Assert.Equal(0, result.ExitCode);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        long guesses = doc.RootElement.GetProperty("speculative_tokens").GetInt64();
        Assert.Equal(slowLink, guesses > 0);
    }

    [Fact]
    public void ABudgetTooSmallIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run([.. Greedy, "--kv", "specache", "--kv-budget", "64KiB"]), "more than the budget of 64 KiB");

    [Fact]
    public void ABudgetThatIsNotASizeIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run([.. Greedy, "--kv", "full", "--kv-budget", "plenty"]), "--kv-budget: 'plenty' is not a positive byte count");

    [Fact]
    public void AnUnknownHostTierIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run([.. Greedy, "--kv", "specache", "--host-tier", "tape"]), "host tier must be 'ram' or 'disk:");

    [Fact]
    public void ABadLinkModelIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run([.. Greedy, "--kv", "specache", "--host-latency", "soon"]), "latency 'soon'");

    [Fact]
    public void TheDefaultModelRunsWithSpeCache()
    {
        // stories260K has heads of 8 channels: the low-bit copy takes the scalar kernels.
        var result = CliRunner.Run("generate", "--kv", "specache", "--kv-topk", "512", "--temperature", "0", "-n", "200");
        var full = CliRunner.Run("generate", "--temperature", "0", "-n", "200");
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(full.StdOut, result.StdOut);
    }

    [Fact]
    public void AThrottledLinkStillGivesTheSameText()
    {
        var free = CliRunner.Run([.. Greedy, "--kv", "specache", "--kv-topk", "8", "--kv-speculation", "on"]);
        var slow = CliRunner.Run([.. Greedy, "--kv", "specache", "--kv-topk", "8", "--kv-speculation", "on", "--host-bandwidth", "1GB/s", "--host-latency", "20us"]);
        Assert.Equal(0, slow.ExitCode);
        Assert.Equal(free.StdOut, slow.StdOut);
    }

    [Fact]
    public void AKilledRunOnADiskTierLeavesNothingARestartTripsOver()
    {
        string file = Path.Combine(TestPaths.Scratch("cli-disk-tier"), $"{Guid.NewGuid():N}.kv");
        string[] args = [.. Greedy[..^3], "-n", "400", "--ignore-eos", "--kv", "specache", "--kv-speculation", "on", "--host-tier", "disk:" + file];

        // Start a run and kill it as soon as its host tier file exists (mid-prefill or mid-decode).
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(CliRunner.CliDll);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["XDG_CACHE_HOME"] = TestPaths.Scratch("cli-cache");
        using (var process = Process.Start(start)!)
        {
            var clock = Stopwatch.StartNew();
            while (!File.Exists(file) && !process.HasExited && clock.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(5);
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }

        // The same command again, over whatever the killed run left, gives the text a RAM tier gives.
        var restarted = CliRunner.Run(args);
        Assert.Equal(0, restarted.ExitCode);
        var ram = CliRunner.Run([.. args[..^2], "--host-tier", "ram"]);
        Assert.Equal(ram.StdOut, restarted.StdOut);
        File.Delete(file);
    }
}
