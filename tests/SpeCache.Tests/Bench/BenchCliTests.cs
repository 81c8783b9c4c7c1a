using System.Text.Json;
using SpeCache.KvCache;
using SpeCache.Tests.Cli;

namespace SpeCache.Tests.Bench;

/// <summary><c>specache make-model</c> and <c>specache bench</c> as a user runs them, on tiny models.</summary>
public class BenchCliTests
{
    /// <summary>An empty scratch folder of the bench tests (files from an earlier run deleted).</summary>
    internal static string Folder(string name)
    {
        string dir = TestPaths.Scratch(Path.Combine("bench-cli", name));
        foreach (var file in Directory.GetFiles(dir)) File.Delete(file);
        return dir;
    }

    [Fact]
    public void MakeModelPrintsThePathAndReusesTheFile()
    {
        string dir = Folder("make-model");
        var first = CliRunner.Run("make-model", "--shape", "tiny-llama", "--type", "q4_k", "--layers", "1", "--seed", "5", "--out", dir);
        Assert.True(first.ExitCode == 0, first.StdErr);
        string path = first.StdOut.Trim();
        Assert.Equal(Path.Combine(dir, "tiny-llama-q4_k-seed5-l1.gguf"), path);
        Assert.Equal("", first.StdErr); // no progress output when stderr is redirected
        var written = File.GetLastWriteTimeUtc(path);

        var second = CliRunner.Run("make-model", "--shape", "tiny-llama", "--type", "q4_k", "--layers", "1", "--seed", "5", "--out", dir);
        Assert.Equal(path, second.StdOut.Trim());
        Assert.Equal(written, File.GetLastWriteTimeUtc(path));
        Assert.Equal([path], Directory.GetFiles(dir));

        var info = CliRunner.Run("info", "-m", path);
        Assert.Contains("layers 1", info.StdOut);
        Assert.Contains("Q4_K", info.StdOut);
    }

    [Fact]
    public void MakeModelRejectsAnUnknownShapeInOneLine()
    {
        var result = CliRunner.Run("make-model", "--shape", "gpt-5", "--out", Folder("unknown"));
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("gpt-5", result.StdErr);
        Assert.Empty(Directory.GetFiles(Folder("unknown")));
    }

    [Fact]
    public void BenchWritesMarkdownJsonAndAPngForEveryPolicyAndDepth()
    {
        string models = Folder("models"), output = Folder("results");
        var result = CliRunner.Run("bench", "--shape", "tiny-llama", "--layers", "1", "--models-dir", models, "--depths", "64,0",
            "--prompt", "8", "--decode", "4", "--threads", "1", "--stream-mib", "16", "--out", output);
        Assert.True(result.ExitCode == 0, result.StdErr);

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "bench.json")));
        var root = json.RootElement;
        Assert.Equal("tiny-llama-q8_0-seed0-l1.gguf", root.GetProperty("modelFile").GetString());
        var rows = root.GetProperty("rows").EnumerateArray().ToList();
        // The bandwidth is measured beside every row, before and after its timing, and the row's roofline is against the higher.
        var triads = root.GetProperty("triadBytesPerSecond").EnumerateArray().Select(t => t.GetDouble()).ToList();
        Assert.Equal(2 * rows.Count, triads.Count);
        Assert.All(triads, t => Assert.True(t > 0));
        var expected = KvCacheFactory.Policies.SelectMany(p => new[] { (p, 0), (p, 64) }).ToHashSet();
        Assert.Equal(expected, rows.Select(r => (r.GetProperty("kv").GetString()!, r.GetProperty("depth").GetInt32())).ToHashSet());
        foreach (var row in rows)
        {
            Assert.Equal("SpeCache", row.GetProperty("engine").GetString());
            foreach (var name in new[] { "prefillTokensPerSecond", "decodeTokensPerSecond", "rooflineFraction", "bandwidthBytesPerSecond" })
                Assert.True(double.IsFinite(row.GetProperty(name).GetDouble()) && row.GetProperty(name).GetDouble() > 0, name);
            double bandwidth = row.GetProperty("bandwidthBytesPerSecond").GetDouble();
            Assert.Contains(bandwidth, triads);
            double bytesPerSecond = row.GetProperty("decodeTokensPerSecond").GetDouble() * row.GetProperty("bytesPerToken").GetInt64();
            Assert.Equal(bytesPerSecond / bandwidth, row.GetProperty("rooflineFraction").GetDouble(), 1e-9);
            Assert.True(row.GetProperty("weightBytesPerToken").GetInt64() > 0);
            // The KV estimate grows with depth; at depth 0 the prompt's tokens are still in the cache.
            Assert.True(row.GetProperty("kvBytesPerToken").GetInt64() > 0);
        }
        long Kv(string policy, int depth) => rows.Single(r => r.GetProperty("kv").GetString() == policy && r.GetProperty("depth").GetInt32() == depth).GetProperty("kvBytesPerToken").GetInt64();
        Assert.True(Kv("full", 64) > Kv("full", 0));
        Assert.True(Kv("kivi", 64) < Kv("full", 64));

        Assert.True(root.GetProperty("complete").GetBoolean());
        Assert.Equal(["bench-decode.png", "bench.json", "bench.md"], Directory.GetFiles(output).Select(f => Path.GetFileName(f)!).Order().ToArray()); // no temporary left

        string markdown = File.ReadAllText(Path.Combine(output, "bench.md"));
        Assert.DoesNotContain("Partial report", markdown);
        Assert.Contains("| engine | KV | depth |", markdown);
        Assert.Contains("measured just before and just after each row's timed prefill and decode", markdown);
        Assert.Contains($"{triads.Count} measurements", markdown);
        Assert.Contains("| read GB/s | STREAM GB/s | roofline |", markdown);
        foreach (var (policy, depth) in expected)
            Assert.Contains($"| SpeCache | {policy} | {depth} |", markdown);
        Assert.Contains("| SpeCache | full | 0 |", result.StdOut); // the table is printed too

        byte[] png = File.ReadAllBytes(Path.Combine(output, "bench-decode.png"));
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
        Assert.True(png.Length > 1000);
    }

    /// <summary>
    /// A long run (hours at 32K on a small machine) writes its report as each row is done, so a run
    /// stopped part-way keeps the rows it measured, in a report that says it is partial.
    /// </summary>
    [Fact]
    public void BenchWritesEachRowAsItIsDoneSoAStoppedRunKeepsThem()
    {
        string models = Folder("models"), output = Folder("stopped");
        string json = Path.Combine(output, "bench.json");
        using var process = CliRunner.Start("bench", "--shape", "tiny-llama", "--models-dir", models, "--depths", "0,4000",
            "--prompt", "8", "--decode", "4", "--threads", "1", "--stream-mib", "16", "--out", output);
        JsonElement? seen = null;
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (seen == null && !process.HasExited && DateTime.UtcNow < deadline)
        {
            if (File.Exists(json))
            {
                using var report = JsonDocument.Parse(File.ReadAllText(json)); // whole: written beside it and moved into place
                seen = report.RootElement.Clone();
            }
            else Thread.Sleep(20);
        }
        if (!process.HasExited) process.Kill(entireProcessTree: true);
        process.WaitForExit();
        Assert.True(seen != null, "no report appeared while the run was going");
        var partial = seen.Value;
        Assert.False(partial.GetProperty("complete").GetBoolean());
        var rows = partial.GetProperty("rows").EnumerateArray().ToList();
        Assert.InRange(rows.Count, 1, 2 * KvCacheFactory.Policies.Count - 1);
        foreach (var row in rows)
            Assert.True(row.GetProperty("decodeTokensPerSecond").GetDouble() > 0);

        // Stopped (or, on a fast machine, finished since): the files left are whole reports.
        using var left = JsonDocument.Parse(File.ReadAllText(json));
        bool finished = left.RootElement.GetProperty("complete").GetBoolean();
        Assert.InRange(left.RootElement.GetProperty("rows").GetArrayLength(), rows.Count, 2 * KvCacheFactory.Policies.Count);
        string markdown = File.ReadAllText(Path.Combine(output, "bench.md"));
        Assert.True(finished || markdown.Contains("**Partial report**: written as each row was done; the run had not finished"), markdown);
        Assert.Contains("| SpeCache | ", markdown);
    }

    /// <summary>Reports go where --out says at the end of a run that may take hours: a folder that cannot be written is refused before anything is measured.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BenchRefusesAnOutFolderItCannotWriteBeforeMeasuring(bool batch)
    {
        string file = Path.Combine(Folder("not-a-folder"), "taken");
        File.WriteAllText(file, "a file, not a folder");
        string[] args = ["bench", "--model", TestPaths.Llama2TinyRandom, "--depths", "0", "--prompt", "8", "--decode", "4", "--threads", "1", "--out", file];
        var result = CliRunner.Run(batch ? [.. args, "--batch"] : args);
        CliRunner.AssertOneLineError(result, $"--out: cannot write reports into '{file}'");
        Assert.Equal("a file, not a folder", File.ReadAllText(file));
        Assert.DoesNotContain("|", result.StdOut); // no table: nothing was measured
    }

    [Fact]
    public void BenchRejectsAnUnknownPolicyInOneLine()
    {
        var result = CliRunner.Run("bench", "--model", TestPaths.Llama2TinyRandom, "--kv", "full,nonesuch", "--out", Folder("bad-kv"));
        CliRunner.AssertOneLineError(result, "unknown KV cache policy 'nonesuch'");
    }

    [Theory]
    [InlineData("bits=1,full", "is a setting with no policy before it")]
    [InlineData("specache:bits=3", "specache bits must be 1, 2 or 4")]
    [InlineData("kivi:colour=red", "unknown setting 'colour'")]
    public void BenchRejectsABadPolicySettingInOneLine(string kv, string message)
    {
        var result = CliRunner.Run("bench", "--model", TestPaths.Llama2TinyRandom, "--kv", kv, "--out", Folder("bad-kv-setting"));
        CliRunner.AssertOneLineError(result, message);
    }

    [Fact]
    public void BenchRejectsZeroRoundsInOneLine()
    {
        var result = CliRunner.Run("bench", "--model", TestPaths.Llama2TinyRandom, "--rounds", "0", "--out", Folder("bad-rounds"));
        CliRunner.AssertOneLineError(result, "--rounds must be positive");
    }

    /// <summary>
    /// Policies with settings are measured under the name given, and with several rounds each row
    /// holds every round's figure and their median (the report says so).
    /// </summary>
    [Fact]
    public void BenchMeasuresPoliciesWithSettingsInRoundsAndReportsTheMedian()
    {
        string models = Folder("models"), output = Folder("rounds");
        var result = CliRunner.Run("bench", "--shape", "tiny-llama", "--layers", "1", "--models-dir", models, "--depths", "0",
            "--kv", "full,specache:bits=1,group=64,k=8", "--rounds", "3", "--prompt", "8", "--decode", "4", "--threads", "1",
            "--stream-mib", "16", "--out", output);
        Assert.True(result.ExitCode == 0, result.StdErr);

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "bench.json")));
        Assert.Equal(3, json.RootElement.GetProperty("rounds").GetInt32());
        var rows = json.RootElement.GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(["full", "specache:bits=1,group=64,k=8"], rows.Select(r => r.GetProperty("kv").GetString()!).Order().ToArray());
        foreach (var row in rows)
        {
            var decode = row.GetProperty("decodeTokensPerSecondByRound").EnumerateArray().Select(v => v.GetDouble()).Order().ToArray();
            var prefill = row.GetProperty("prefillTokensPerSecondByRound").EnumerateArray().Select(v => v.GetDouble()).Order().ToArray();
            Assert.Equal(3, decode.Length);
            Assert.All(decode, v => Assert.True(v > 0));
            Assert.Equal(decode[1], row.GetProperty("decodeTokensPerSecond").GetDouble());
            Assert.Equal(prefill[1], row.GetProperty("prefillTokensPerSecond").GetDouble());
        }
        // The 1-bit copy with its scales is far smaller than the 16-bit cache.
        long Kv(string policy) => rows.Single(r => r.GetProperty("kv").GetString() == policy).GetProperty("kvBytesPerToken").GetInt64();
        Assert.True(Kv("specache:bits=1,group=64,k=8") * 4 < Kv("full"));
        string markdown = File.ReadAllText(Path.Combine(output, "bench.md"));
        Assert.Contains("measured in 3 rounds", markdown);
        Assert.Contains("| SpeCache | specache:bits=1,group=64,k=8 | 0 |", markdown);
    }

    [Fact]
    public void BatchBenchFitsAsManySequencesAsTheBudgetHoldsAndDecodesThemTogether()
    {
        string models = Folder("batch-models"), output = Folder("batch-results");
        var result = CliRunner.Run("bench", "--batch", "--shape", "tiny-llama", "--layers", "1", "--models-dir", models, "--context", "500",
            "--decode", "3", "--threads", "1", "--batch-budget", "1MiB", "--max-batch", "12",
            "--policy", "full", "--policy", "kivi:bits=2,residual=32", "--policy", "specache:bits=1,group=32,k=8,residual=32", "--out", output);
        Assert.True(result.ExitCode == 0, result.StdErr);

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "batch.json")));
        var rows = json.RootElement.GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(["full", "kivi:bits=2,residual=32", "specache:bits=1,group=32,k=8,residual=32"], rows.Select(r => r.GetProperty("policy").GetString()));
        foreach (var row in rows)
        {
            long perSequence = row.GetProperty("fastTierBytesPerSequence").GetInt64();
            int batch = row.GetProperty("maxBatch").GetInt32();
            Assert.Equal((int)Math.Min(12, (1L << 20) / perSequence), batch);
            Assert.True(row.GetProperty("tokensPerSecond").GetDouble() > 0);
        }
        Assert.Equal(1.0, rows[0].GetProperty("ratioToFull").GetDouble());
        Assert.True(rows[0].GetProperty("maxBatch").GetInt32() < rows[1].GetProperty("maxBatch").GetInt32(), "the low-bit cache fits more sequences");
        Assert.True(rows[2].GetProperty("hostTierBytesPerSequence").GetInt64() > 0);
        Assert.Contains("| KV policy | fast tier / sequence |", File.ReadAllText(Path.Combine(output, "batch.md")));
        byte[] png = File.ReadAllBytes(Path.Combine(output, "batch-throughput.png"));
        Assert.Equal(0x89, png[0]);
    }

    [Fact]
    public void BatchBenchRejectsABadPolicyOrBudgetInOneLine()
    {
        CliRunner.AssertOneLineError(CliRunner.Run("bench", "--batch", "--model", TestPaths.Llama2TinyRandom, "--policy", "specache:bits=3", "--out", Folder("bad-batch")), "bits");
        CliRunner.AssertOneLineError(CliRunner.Run("bench", "--batch", "--model", TestPaths.Llama2TinyRandom, "--batch-budget", "lots", "--out", Folder("bad-batch")), "--batch-budget");
    }
}
