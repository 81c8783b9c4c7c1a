// Attention time per decode step, per KV cache policy, at one context depth, for the KV shape of a
// real model (default Llama-3.2-1B: 16 layers, 32 query heads, 8 KV heads, head size 64). Only the
// cache's work is timed (append + attend for every layer), not the weights, so the policies' costs
// are seen on their own. Keys have a few outlier channels, as KIVI reports for real models.
// Run: dotnet run -c Release --project bench/AttentionBench [depth] [steps] [policy ...]
using System.Diagnostics;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Kivi;
using SpeCache.KvCache.Policies.SpeCache;
using SpeCache.Transformer;

int depth = args.Length > 0 ? int.Parse(args[0]) : 32 * 1024;
int steps = args.Length > 1 ? int.Parse(args[1]) : 20;
string[] policies = args.Length > 2 ? args[2..] : ["full", "kivi-2", "kivi-1", "specache-2", "specache-1"];

var config = new ModelConfig
{
    Architecture = "llama",
    VocabSize = 16,
    Dim = 2048,
    HiddenDim = 16,
    LayerCount = 16,
    HeadCount = 32,
    KvHeadCount = 8,
    HeadDim = 64,
    RopeDim = 64,
    ContextLength = depth + steps + 8,
};
Console.WriteLine($"attention per decode step, {config.LayerCount} layers x {config.KvHeadCount} KV heads x {config.QueryGroupSize} query heads, head {config.HeadDim}, depth {depth}");
var rnd = new Random(1);
float Next(int channel) => (float)(rnd.NextDouble() * 2 - 1) * (channel < 3 ? 10 : 1);

double? fullMs = null;
foreach (string name in policies)
{
    var options = name switch
    {
        "full" => new KvCacheOptions { Policy = "full" },
        "kivi-2" => new KvCacheOptions { Policy = "kivi", Kivi = new KiviOptions(2, 32, 64) },
        "kivi-1" => new KvCacheOptions { Policy = "kivi", Kivi = new KiviOptions(1, 64, 64) },
        "specache-2" => new KvCacheOptions { Policy = "specache", SpeCache = new SpeCacheOptions(2, 32, 64) },
        "specache-1" => new KvCacheOptions { Policy = "specache", SpeCache = new SpeCacheOptions(1, 64, 64) },
        "specache-1-nospec" => new KvCacheOptions { Policy = "specache", SpeCache = new SpeCacheOptions(1, 64, 64, Speculative: false) },
        "specache-1-lowbit" => new KvCacheOptions { Policy = "specache", SpeCache = new SpeCacheOptions(1, 64, 64, Miss: MissPolicy.LowBit) },
        _ => throw new ArgumentException($"unknown policy {name}"),
    };
    using var cache = KvCacheFactory.Create(options, config, config.ContextLength);
    const int chunk = 256;
    var k = new float[chunk * config.KvDim];
    var v = new float[chunk * config.KvDim];
    for (int filled = 0; filled < depth; filled += chunk)
    {
        int n = Math.Min(chunk, depth - filled);
        for (int i = 0; i < n * config.KvDim; i++) { k[i] = Next(i % config.HeadDim); v[i] = Next(64); }
        cache.BeginStep(n, 0);
        for (int l = 0; l < config.LayerCount; l++) cache.Append(l, k.AsSpan(0, n * config.KvDim), v.AsSpan(0, n * config.KvDim), n);
        cache.Commit(n);
    }
    int rows = 1 + cache.SpeculativeRows;
    var q = new float[rows * config.QDim];
    var o = new float[rows * config.QDim];
    var kk = new float[rows * config.KvDim];
    var vv = new float[rows * config.KvDim];
    // The speculative row's queries resemble the real row's (the next token's), as in real decoding.
    for (int i = 0; i < config.QDim; i++) q[i] = Next(i % config.HeadDim);
    for (int i = config.QDim; i < q.Length; i++) q[i] = q[i - config.QDim] + 0.3f * Next(64);
    var times = new List<double>();
    for (int step = 0; step < steps; step++)
    {
        for (int i = 0; i < kk.Length; i++) { kk[i] = Next(i % config.HeadDim); vv[i] = Next(64); }
        long start = Stopwatch.GetTimestamp();
        cache.BeginStep(rows, rows - 1);
        for (int l = 0; l < config.LayerCount; l++)
        {
            cache.Append(l, kk, vv, rows);
            cache.Attend(l, q, o, rows);
        }
        cache.Commit(1);
        times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
    }
    times.Sort();
    double median = times[times.Count / 2];
    fullMs ??= name == "full" ? median : null;
    var c = cache.Counters;
    string extra = c == null ? "" : $", hit rate {c.PrefetchHitRate:F2}, hidden {c.HiddenFraction:F2}";
    Console.WriteLine($"{name,-12} {median,8:F2} ms/step{(fullMs is double f ? $"  {f / median,5:F2}x full" : "")}  fast tier {cache.Memory.FastTierBytes / 1048576.0,8:F1} MiB{extra}");
}
