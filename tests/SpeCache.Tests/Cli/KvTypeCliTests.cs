using System.Text.Json;

namespace SpeCache.Tests.Cli;

public class KvTypeCliTests
{
    [Fact]
    public void Q8_0CacheGeneratesTheSameOpeningAsF16()
    {
        var f16 = CliRunner.Run("generate", "--temperature", "0", "-n", "30", "-p", "Once upon a time");
        var q8 = CliRunner.Run("generate", "--temperature", "0", "-n", "30", "-p", "Once upon a time", "--kv-type", "q8_0");
        Assert.True(q8.ExitCode == 0, q8.StdErr);
        Assert.Equal(f16.StdOut, q8.StdOut);
    }

    [Fact]
    public void InfoReportsBytesPerTokenForEachCacheType()
    {
        var result = CliRunner.Run("info", "--json");
        Assert.Equal(0, result.ExitCode);
        using var doc = JsonDocument.Parse(result.StdOut);
        var kv = doc.RootElement.GetProperty("kv_bytes_per_token");
        // stories260K: 5 layers, KV rows of 32 values, K and V: one 34-byte Q8_0 block or 18-byte Q4_0 block per row.
        Assert.Equal(2 * 5 * 34, kv.GetProperty("full q8_0").GetInt64());
        Assert.Equal(2 * 5 * 18, kv.GetProperty("full q4_0").GetInt64());
        Assert.Equal(2 * 5 * 32 * 2, kv.GetProperty("full bf16").GetInt64());
        Assert.Equal(2 * 5 * 32 * 4, kv.GetProperty("full f32").GetInt64());
    }

    [Fact]
    public void AnUnknownTypeIsAParseError()
    {
        var result = CliRunner.Run("generate", "--kv-type", "q5_1");
        Assert.Equal(2, result.ExitCode);
        CliRunner.AssertOneLineError(result, "q5_1");
    }

    [Fact]
    public void ATypeForAnotherPolicyIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run("generate", "--kv", "h2o", "--kv-type", "q4_0"), "--kv-type q4_0 applies to --kv full only");
}
