using SpeCache.LlamaCpp;

namespace SpeCache.Tests.LlamaCpp;

/// <summary>
/// llama.cpp's speed on the tiny model, printed for the team (dotnet test --logger "console;verbosity=detailed",
/// or the xunit runner's -showLiveOutput). Asserts only that the figures are sane: timing belongs to bench/.
/// </summary>
[Collection(LlamaCppCollection.Name)]
public class LlamaCppSpeedTests(ITestOutputHelper output)
{
    // 2 threads is the team's reference figure; 1 thread is printed beside it because on a model this
    // small the second thread costs more in synchronisation than it brings.
    [Theory]
    [InlineData(2)]
    [InlineData(1)]
    public void DecodeTokensPerSecondOnTinyRandom(int threads)
    {
        const int promptTokens = 32, decodeTokens = 64, maxRuns = 5;
        using var model = LlamaCppModel.Load(TestPaths.Llama2TinyRandom, threads, contextLength: 512);
        var prompt = Enumerable.Range(0, promptTokens).Select(i => i == 0 ? model.Bos : 1000 + 37 * i).ToArray();

        _ = model.Decode(prompt, 16); // warm-up: graph allocation, thread pool, page faults
        // Best of several: the cores are shared with whatever else runs, and a spinning ggml worker that
        // loses its core stalls every step (seen: 13 ms per token instead of 0.35 ms while another process
        // was busy), so the slow runs measure the neighbours, not llama.cpp.
        // A budget keeps a disturbed run from taking the suite's time: it can slow to ~70 ms per token.
        var timings = new List<LlamaCppDecodeTiming>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (timings.Count < maxRuns && (timings.Count < 2 || clock.Elapsed < TimeSpan.FromSeconds(1)))
            timings.Add(model.Decode(prompt, decodeTokens));
        var best = timings.MaxBy(r => r.DecodeTokensPerSecond)!;

        output.WriteLine($"llama.cpp peer ({LlamaCppRuntime.CpuBackend}), {model.Description}, {threads} threads, F16 KV cache");
        output.WriteLine(LlamaCppRuntime.SystemInfo.Trim());
        output.WriteLine($"prefill {promptTokens} tokens (same run): {best.PrefillTokensPerSecond:F0} tokens/s ({best.Prefill.TotalMilliseconds:F2} ms)");
        output.WriteLine($"decode {decodeTokens} tokens one by one: best of {timings.Count} {best.DecodeTokensPerSecond:F0} tokens/s " +
            $"({best.Decode.TotalMilliseconds / decodeTokens * 1000:F0} us/token); all runs: " +
            string.Join(", ", timings.Select(r => $"{r.DecodeTokensPerSecond:F0}")));

        Assert.Equal(decodeTokens, best.DecodedTokens);
        Assert.All(best.GeneratedTokens, t => Assert.InRange(t, 0, model.VocabSize - 1));
        Assert.Equal(timings[0].GeneratedTokens, timings[1].GeneratedTokens);
        // Sanity only: undisturbed, this 1-layer, 8-wide model decodes thousands of tokens/s; under heavy
        // contention tens. Below 1 something is broken (e.g. a debug build of llama.cpp got loaded).
        Assert.InRange(best.DecodeTokensPerSecond, 1, 10_000_000);
    }
}
