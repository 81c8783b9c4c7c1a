using System.Diagnostics;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.KvCache.Policies.SpeCache;
using SpeCache.KvCache.Tiers;
using SpeCache.Transformer;

namespace SpeCache.Tests.KvCache.Tiers;

public class HostTierTests
{
    static void RoundTrip(HostTier tier)
    {
        var rnd = new Random(3);
        var data = new byte[4096];
        rnd.NextBytes(data);
        data.CopyTo(tier.Slice(tier.Bytes - data.Length, data.Length));
        data.CopyTo(tier.Slice(0, data.Length));
        Assert.Equal(data, tier.Slice(tier.Bytes - data.Length, data.Length).ToArray());
        Assert.Equal(data, tier.Slice(0, data.Length).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => tier.Slice(tier.Bytes - 10, 11));
    }

    [Fact]
    public void RamArenaHoldsWhatIsWritten()
    {
        using var tier = HostTier.InRam(1 << 20);
        Assert.False(tier.OnDisk);
        RoundTrip(tier);
    }

    [Fact]
    public void DiskArenaInAFolderLeavesNothingBehind()
    {
        string folder = TestPaths.Scratch($"host-tier-{Guid.NewGuid():N}");
        using (var tier = HostTier.OnDiskAt(folder, 64L << 20))
        {
            Assert.True(tier.OnDisk);
            RoundTrip(tier);
            if (!OperatingSystem.IsWindows())
                Assert.Empty(Directory.GetFiles(folder)); // unlinked once mapped: a kill cannot leave it behind
        }
        Assert.Empty(Directory.GetFiles(folder));
    }

    [Fact]
    public void DiskArenaAtAFilePathOverwritesALeftover()
    {
        string file = Path.Combine(TestPaths.Scratch("host-tier-file"), $"{Guid.NewGuid():N}.kv");
        // What a killed run could leave: a file of another size full of stale bytes.
        File.WriteAllBytes(file, Enumerable.Repeat((byte)0xAB, 12345).ToArray());
        using (var tier = HostTier.OnDiskAt(file, 1 << 20))
        {
            Assert.Equal(file, tier.FilePath);
            Assert.Equal(0, tier.Slice(0, 16).ToArray().Sum(b => b)); // truncated, not reused
            RoundTrip(tier);
        }
        Assert.Equal(1 << 20, new FileInfo(file).Length);
        File.Delete(file);
    }

    [Fact]
    public void AMissingFolderIsAClearError()
    {
        var e = Assert.Throws<DirectoryNotFoundException>(() => HostTier.OnDiskAt(Path.Combine(TestPaths.Scratch("x"), "no", "such", "file.kv"), 1024));
        Assert.Contains("does not exist", e.Message);
    }
}

public class InterconnectTests
{
    [Fact]
    public void TransferTimeIsLatencyPlusBytesOverBandwidth()
    {
        var link = new Interconnect(1e9, TimeSpan.FromMicroseconds(10));
        Assert.Equal(TimeSpan.FromMicroseconds(10) + TimeSpan.FromMilliseconds(1), link.TransferTime(1_000_000));
        Assert.Equal(TimeSpan.Zero, Interconnect.Unlimited.TransferTime(1L << 40));
    }

    [Fact]
    public void WaitingLastsAtLeastTheModelledTime()
    {
        // A lower bound only: the wait may be longer on a busy machine, never shorter.
        var link = new Interconnect(1e8, TimeSpan.FromMilliseconds(2));
        long start = Stopwatch.GetTimestamp();
        link.WaitForTransfer(1_000_000, start); // 2 ms + 10 ms
        Assert.True(Stopwatch.GetElapsedTime(start) >= TimeSpan.FromMilliseconds(12));
    }

    [Theory]
    [InlineData("25GB/s", 25e9)]
    [InlineData("1GiB/s", 1073741824)]
    [InlineData("512MB", 512e6)]
    public void BandwidthsParse(string text, double expected) => Assert.Equal(expected, Interconnect.ParseBandwidth(text));

    [Theory]
    [InlineData("10us", 10e-6)]
    [InlineData("2ms", 2e-3)]
    [InlineData("0.5s", 0.5)]
    [InlineData("7", 7e-6)]
    public void LatenciesParse(string text, double seconds) => Assert.Equal(seconds, Interconnect.ParseLatency(text).TotalSeconds, 9);

    [Theory]
    [InlineData("fast")]
    [InlineData("-3ms")]
    [InlineData("0GB/s")]
    public void NonsenseIsAFormatError(string text) =>
        Assert.Throws<FormatException>(() => { Interconnect.ParseLatency(text); Interconnect.ParseBandwidth(text); });
}

public class ByteSizeTests
{
    [Theory]
    [InlineData("512", 512)]
    [InlineData("64KB", 64_000)]
    [InlineData("64KiB", 65_536)]
    [InlineData("1.5GiB", 1_610_612_736)]
    [InlineData("2 GB", 2_000_000_000)]
    public void SizesParse(string text, long bytes) => Assert.Equal(bytes, ByteSize.Parse(text));

    [Theory]
    [InlineData("lots")]
    [InlineData("12XB")]
    [InlineData("-1MB")]
    public void NonsenseIsAFormatError(string text) => Assert.Throws<FormatException>(() => ByteSize.Parse(text));

    [Fact]
    public void FormatsWithBinaryUnits()
    {
        Assert.Equal("512 B", ByteSize.Format(512));
        Assert.Equal("1.5 GiB", ByteSize.Format(1_610_612_736));
    }
}

public class TopKTests
{
    [Theory]
    [InlineData(1000, 64, 1)]
    [InlineData(1000, 1, 2)]
    [InlineData(50, 64, 3)]
    [InlineData(64, 64, 4)]
    [InlineData(5000, 300, 5)]
    public void SelectsTheLargestInPositionOrder(int n, int k, int seed)
    {
        var rnd = new Random(seed);
        // Few distinct values, so ties are common: the earlier position must win.
        var scores = Enumerable.Range(0, n).Select(_ => (float)rnd.Next(40)).ToArray();
        var positions = new int[Math.Min(k, n)];
        int count = TopK.Select(scores, k, positions, new float[k]);
        var expected = Enumerable.Range(0, n).OrderByDescending(i => scores[i]).ThenBy(i => i).Take(k).Order().ToArray();
        Assert.Equal(expected, positions[..count]);
    }

    /// <summary>
    /// Rising scores (every chunk of 16 beats the heap), falling ones (almost none does), and random
    /// ones, at lengths that leave a tail after the chunks: the same positions as sorting.
    /// </summary>
    [Theory]
    [InlineData(1037, 64, "rising")]
    [InlineData(1037, 64, "falling")]
    [InlineData(32771, 64, "random")]
    [InlineData(33, 17, "random")]
    public void ChunkedScanSelectsWhatSortingSelects(int n, int k, string shape)
    {
        var rnd = new Random(n + k);
        var scores = shape switch
        {
            "rising" => Enumerable.Range(0, n).Select(i => i * 0.5f + (float)rnd.NextDouble()).ToArray(),
            "falling" => Enumerable.Range(0, n).Select(i => -i * 0.5f + (float)rnd.NextDouble()).ToArray(),
            _ => Enumerable.Range(0, n).Select(_ => (float)rnd.NextDouble()).ToArray(),
        };
        var positions = new int[k];
        int count = TopK.Select(scores, k, positions, new float[k]);
        var expected = Enumerable.Range(0, n).OrderByDescending(i => scores[i]).ThenBy(i => i).Take(k).Order().ToArray();
        Assert.Equal(expected, positions[..count]);
    }

    /// <summary>
    /// The floor the scan starts from (the least of k chunks' maxima) at lengths just past k, where
    /// chunks are one score, and with a tail past the chunks; scores drawn from a few values so that
    /// many tie with the floor (-0 and +0 among them), or with infinities and rows whose chunks are
    /// all -∞ (masked positions), which take the plain scan: the same positions as sorting.
    /// </summary>
    [Theory]
    [InlineData(65, 64, "ties")]
    [InlineData(127, 64, "ties")]
    [InlineData(128, 64, "ties")]
    [InlineData(4099, 64, "ties")]
    [InlineData(4096, 64, "zeros")]
    [InlineData(1000, 16, "infinities")]
    [InlineData(1000, 64, "masked")]
    public void FloorSelectsWhatSortingSelects(int n, int k, string shape)
    {
        var rnd = new Random(n * 31 + k);
        var scores = shape switch
        {
            "zeros" => Enumerable.Range(0, n).Select(_ => rnd.Next(3) switch { 0 => -0f, 1 => 0f, _ => -1f }).ToArray(),
            "infinities" => Enumerable.Range(0, n).Select(_ => rnd.Next(50) switch { 0 => float.PositiveInfinity, 1 => float.NegativeInfinity, var v => (float)v }).ToArray(),
            "masked" => Enumerable.Range(0, n).Select(i => i < 900 ? float.NegativeInfinity : (float)rnd.Next(5)).ToArray(),
            _ => Enumerable.Range(0, n).Select(_ => (float)rnd.Next(6)).ToArray(),
        };
        var positions = new int[k];
        int count = TopK.Select(scores, k, positions, new float[k]);
        var expected = Enumerable.Range(0, n).OrderByDescending(i => scores[i]).ThenBy(i => i).Take(k).Order().ToArray();
        Assert.Equal(expected, positions[..count]);
        var plain = new int[k];
        Assert.Equal(positions[..count], plain[..TopK.Select(scores, k, plain, new float[k], chunked: false)]);
    }

    /// <summary>
    /// NaN scores (inside chunks and in the tail) and ties: the chunked scan selects exactly what the
    /// plain compare-per-score loop does, whatever that makes of a NaN.
    /// </summary>
    [Theory]
    [InlineData(100, 4, 1)]
    [InlineData(1000, 64, 2)]
    [InlineData(4099, 16, 3)]
    public void ChunkedScanEqualsThePlainLoopWithNaNsAndTies(int n, int k, int seed)
    {
        var rnd = new Random(seed);
        var scores = Enumerable.Range(0, n).Select(_ => (float)rnd.Next(200)).ToArray();
        for (int i = 0; i < n / 50 + 1; i++) scores[rnd.Next(n)] = float.NaN;
        scores[n - 1] = float.NaN;
        var chunked = new int[k];
        var plain = new int[k];
        int c = TopK.Select(scores, k, chunked, new float[k], chunked: true);
        int p = TopK.Select(scores, k, plain, new float[k], chunked: false);
        Assert.Equal(plain[..p], chunked[..c]);
        Assert.Contains(n - 1, chunked[..c]); // the last score, a NaN, replaces the root and stays
    }
}

/// <summary>A long context on a disk host tier, far beyond what the fast tier holds at 16 bit.</summary>
public class LongContextTests
{
    [Fact]
    public void ContextTenTimesTheFastTierBudgetRunsFromDisk()
    {
        // A Llama-3-8B-like head (128 wide), one layer and one KV head, 16K tokens: the 16-bit KV
        // (8 MiB) is 8x what the whole 1-bit fast tier holds (10.7x for the per-token part; the residual
        // and staging pool are a constant on top), and it lives in a file on disk.
        var config = new ModelConfig
        {
            Architecture = "llama",
            VocabSize = 16,
            Dim = 4 * 128,
            HiddenDim = 16,
            LayerCount = 1,
            HeadCount = 4,
            KvHeadCount = 1,
            HeadDim = 128,
            RopeDim = 128,
            ContextLength = 16384,
        };
        var options = new SpeCacheOptions(Bits: 1, GroupSize: 64, ResidualLength: 64, TopK: 64, HostTier: "disk:" + TestPaths.Scratch("long-context"));
        long fast = SpeCacheKvCache.FastTierBytes(config, config.ContextLength, options);
        long host = SpeCacheKvCache.HostTierBytes(config, config.ContextLength);
        Assert.True(host >= 7.9 * fast, $"16-bit KV {host} is only {(double)host / fast:F1}x the fast tier {fast}");
        using var cache = new SpeCacheKvCache(config, config.ContextLength, options, fastTierBudget: fast);

        var rnd = new Random(11);
        const int needle = 1234;
        const int chunk = 1024;
        var k = new float[chunk * 128];
        var v = new float[chunk * 128];
        for (int filled = 0; filled < config.ContextLength - 64; filled += chunk)
        {
            int n = Math.Min(chunk, config.ContextLength - 64 - filled);
            for (int i = 0; i < n * 128; i++) { k[i] = (float)(rnd.NextDouble() * 2 - 1); v[i] = (float)(rnd.NextDouble() * 2 - 1); }
            if (needle >= filled && needle < filled + n)
            {
                int at = (needle - filled) * 128;
                k[at] = 8; // aligned with the queries below
                v.AsSpan(at, 128).Fill(5);
            }
            cache.BeginStep(n, 0);
            cache.Append(0, k.AsSpan(0, n * 128), v.AsSpan(0, n * 128), n);
            cache.Commit(n);
        }
        // The needle's key is aligned with every query, so exact attention returns its value (5 in
        // every channel); only its 16-bit copy, found by top-k and read from disk, gives that.
        var q = new float[2 * 4 * 128];
        for (int i = 0; i < q.Length; i += 128) q[i] = 40;
        var output = new float[2 * 4 * 128];
        for (int step = 0; step < 40; step++)
        {
            var kk = new float[2 * 128];
            var vv = new float[2 * 128];
            cache.BeginStep(2, 1);
            cache.Append(0, kk, vv, 2);
            cache.Attend(0, q, output, 2);
            cache.Commit(1);
            for (int i = 0; i < 4 * 128; i++)
                Assert.True(MathF.Abs(output[i] - 5) < 0.05f, $"step {step}, output {i} = {output[i]}: the needle was not retrieved");
        }
        Assert.Equal(config.ContextLength - 64 + 40, cache.Length);
        Assert.Equal(40, cache.Counters.DecodeSteps);
        Assert.True(cache.Counters.PrefetchHitRate > 0.5, $"hit rate {cache.Counters.PrefetchHitRate}");
    }
}

/// <summary>Long enough contexts spread KV heads over threads; the result must not change.</summary>
public class ParallelHeadsTests
{
    [Fact]
    public void ThreadedDecodeEqualsFullWithTopKCoveringTheContext()
    {
        var config = new ModelConfig
        {
            Architecture = "llama",
            VocabSize = 16,
            Dim = 8 * 64,
            HiddenDim = 16,
            LayerCount = 2,
            HeadCount = 8,
            KvHeadCount = 4,
            HeadDim = 64,
            RopeDim = 64,
            ContextLength = 3000,
        };
        using IKvCache full = new FullKvCache(config, 3000);
        using var spe = new SpeCacheKvCache(config, 3000, new SpeCacheOptions(Bits: 2, GroupSize: 32, TopK: 4096));
        var rnd = new Random(5);
        float[] Random(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rnd.NextDouble() * 2 - 1); return a; }
        var k = Random(2800 * config.KvDim);
        var v = Random(2800 * config.KvDim);
        foreach (var cache in new IKvCache[] { full, spe })
        {
            cache.BeginStep(2800, 0);
            for (int l = 0; l < 2; l++) cache.Append(l, k, v, 2800);
            cache.Commit(2800);
        }
        for (int step = 0; step < 5; step++)
        {
            var q = Random(2 * config.QDim);
            var kk = Random(2 * config.KvDim);
            var vv = Random(2 * config.KvDim);
            for (int l = 0; l < 2; l++)
            {
                var expected = new float[config.QDim];
                full.BeginStep(1, 0);
                full.Append(l, kk.AsSpan(0, config.KvDim), vv.AsSpan(0, config.KvDim), 1);
                full.Attend(l, q.AsSpan(0, config.QDim), expected, 1);
                var actual = new float[2 * config.QDim];
                spe.BeginStep(2, 1);
                spe.Append(l, kk, vv, 2);
                spe.Attend(l, q, actual, 2);
                for (int i = 0; i < config.QDim; i++)
                    Assert.True(MathF.Abs(expected[i] - actual[i]) < 1e-4f, $"step {step}, layer {l}, output {i}: {expected[i]} vs {actual[i]}");
            }
            full.Commit(1);
            spe.Commit(1);
        }
        Assert.Equal(5, spe.Counters.DecodeSteps);
    }
}
