using System.Text.Json;
using SpeCache.Tests.Cli;

namespace SpeCache.Tests.Bench;

/// <summary>bench/Bench as it is run for the figures in bench/Bench/RESULTS.md: our rows and llama.cpp's from one process, on a tiny model.</summary>
public class PeerBenchTests
{
    static string Folder(string name) => BenchCliTests.Folder("peer-" + name);

    [Fact]
    public void PeerRowsAtEachDepthWithRatiosToItsF16CacheAndAChunkedFillThatTheReportStates()
    {
        string models = Folder("models"), output = Folder("results");
        var result = CliRunner.RunPeerBench("--shape", "tiny-llama", "--layers", "1", "--models-dir", models, "--depths", "0,40",
            "--kv", "full", "--peer-kv", "f16,q4_0", "--peer-fill-chunk", "16", "--prompt", "8", "--decode", "4",
            "--threads", "1", "--stream-mib", "16", "--out", output);
        Assert.True(result.ExitCode == 0, result.StdErr);

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "bench.json")));
        var root = json.RootElement;
        Assert.Equal("llama.cpp f16", root.GetProperty("baseline").GetString());
        var rows = root.GetProperty("rows").EnumerateArray().ToList();
        var expected = new[] { "SpeCache full", "llama.cpp f16", "llama.cpp q4_0" }.SelectMany(s => new[] { (s, 0), (s, 40) }).ToHashSet();
        Assert.Equal(expected, rows.Select(r => ($"{r.GetProperty("engine").GetString()} {r.GetProperty("kv").GetString()}", r.GetProperty("depth").GetInt32())).ToHashSet());
        // llama.cpp's rows too are timed between two triads, their roofline against the higher.
        var triads = root.GetProperty("triadBytesPerSecond").EnumerateArray().Select(t => t.GetDouble()).ToList();
        Assert.Equal(2 * rows.Count, triads.Count);
        foreach (var row in rows)
        {
            Assert.True(row.GetProperty("decodeTokensPerSecond").GetDouble() > 0);
            Assert.True(row.GetProperty("decodeRatio").GetDouble() > 0); // every depth has its llama.cpp f16 row
            Assert.Contains(row.GetProperty("bandwidthBytesPerSecond").GetDouble(), triads);
        }
        // llama.cpp's KV bytes follow its element size: a q4_0 block is 18 bytes for 32 values, f16 64.
        long Kv(string kv, int depth) => rows.Single(r => r.GetProperty("kv").GetString() == kv && r.GetProperty("depth").GetInt32() == depth).GetProperty("kvBytesPerToken").GetInt64();
        Assert.InRange(Kv("q4_0", 40) * 64.0 / 18 / Kv("f16", 40), 0.99, 1.01);

        const string fill = "llama.cpp filled its context in independent chunks of 16 tokens (--peer-fill-chunk), joined into one sequence before timing";
        Assert.Contains(fill, root.GetProperty("contextFill").GetString());
        string markdown = File.ReadAllText(Path.Combine(output, "bench.md"));
        Assert.Contains(fill, markdown);
        Assert.Contains("| llama.cpp | q4_0 | 40 |", markdown);
        Assert.Contains("Ratios are tokens/s over llama.cpp f16 at the same depth.", markdown);
    }

    [Fact]
    public void WithoutTheF16RowTheReportSaysItHasNoRatios()
    {
        string models = Folder("models"), output = Folder("no-baseline");
        var result = CliRunner.RunPeerBench("--shape", "tiny-llama", "--layers", "1", "--models-dir", models, "--depths", "0",
            "--kv", "full", "--peer-kv", "q4_0", "--prompt", "8", "--decode", "4", "--threads", "1", "--stream-mib", "16", "--out", output);
        Assert.True(result.ExitCode == 0, result.StdErr);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "bench.json")));
        var rows = json.RootElement.GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(2, rows.Count);
        Assert.All(rows, r => Assert.False(r.TryGetProperty("decodeRatio", out _)));
        string markdown = File.ReadAllText(Path.Combine(output, "bench.md"));
        Assert.Contains("No ratios: the run measured no llama.cpp f16 row.", markdown);
        Assert.DoesNotContain("Ratios are", markdown);
        Assert.DoesNotContain("chunks", markdown); // a plain fill is not mentioned
    }

    [Fact]
    public void ANegativeFillChunkOrAnUnknownPeerCacheTypeIsAOneLineError()
    {
        // Refused before the default model (a GiB, made on first use) is made, and before anything is measured.
        string output = Folder("refused"), models = Folder("refused-models");
        CliRunner.AssertOneLineError(CliRunner.RunPeerBench("--peer-fill-chunk", "-1", "--models-dir", models, "--out", output), "--peer-fill-chunk");
        CliRunner.AssertOneLineError(CliRunner.RunPeerBench("--peer-kv", "q5_1", "--models-dir", models, "--out", output), "llama.cpp has no cache type 'q5_1'");
        Assert.Empty(Directory.GetFiles(output));
        Assert.Empty(Directory.GetFileSystemEntries(models));
    }
}
