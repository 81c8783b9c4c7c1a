using BenchmarkDotNet.Attributes;
using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.ModelFiles.Synthetic;
using SpeCache.Transformer;

namespace SpeCache.KernelBench;

/// <summary>
/// One decode step of one layer's attention (append the new token's K/V, attend with its queries)
/// per KV policy, on the Llama-3.2-1B KV shape (32 query heads, 8 KV heads, head size 64) at a
/// context depth: the fused low-bit dequantize-dot kernels, the top-k selection and 16-bit pairs
/// of specache, the 16-bit cache of full. Keys have a few outlier channels, as KIVI reports.
/// </summary>
[MemoryDiagnoser]
[InvocationCount(64)]
public class AttentionBenchmarks
{
    [Params("full", "kivi:bits=2", "kivi:bits=1,group=64", "specache:bits=2,spec=off", "specache:bits=1,group=64,spec=off")]
    public string Policy { get; set; } = "full";

    [Params(4096)]
    public int Depth { get; set; }

    static readonly ModelConfig Config = SyntheticShape.Find("llama-3.2-1b").Config with { LayerCount = 1, ContextLength = 8192 };

    IKvCache _cache = null!;
    float[] _context = [], _key = [], _value = [], _query = [], _output = [];

    [GlobalSetup]
    public void Setup()
    {
        var rnd = new Random(1);
        int kvDim = Config.KvDim;
        _context = new float[Depth * kvDim];
        for (int i = 0; i < _context.Length; i++) _context[i] = Outliers(rnd, i % Config.HeadDim);
        _key = new float[kvDim];
        _value = new float[kvDim];
        for (int i = 0; i < kvDim; i++) (_key[i], _value[i]) = (Outliers(rnd, i % Config.HeadDim), Outliers(rnd, 64));
        _query = new float[Config.QDim];
        for (int i = 0; i < _query.Length; i++) _query[i] = Outliers(rnd, i % Config.HeadDim);
        _output = new float[Config.QDim];
        // Room for the benchmark's own steps: each invocation appends one token.
        _cache = KvCacheFactory.Create(PolicySpec.Parse(Policy), Config with { ContextLength = Depth + 1024 }, Depth + 1024);
    }

    /// <summary>Every iteration starts from the same context, so depth does not creep up with the invocations.</summary>
    [IterationSetup]
    public void Refill()
    {
        _cache.Clear();
        const int chunk = 256;
        int kvDim = Config.KvDim;
        for (int start = 0; start < Depth; start += chunk)
        {
            int n = Math.Min(chunk, Depth - start);
            _cache.BeginStep(n, 0);
            var rows = _context.AsSpan(start * kvDim, n * kvDim);
            _cache.Append(0, rows, rows, n);
            _cache.Commit(n);
        }
    }

    [Benchmark]
    public void DecodeStep()
    {
        _cache.BeginStep(1, 0);
        _cache.Append(0, _key, _value, 1);
        _cache.Attend(0, _query, _output, 1);
        _cache.Commit(1);
    }

    [GlobalCleanup]
    public void Cleanup() => _cache.Dispose();

    static float Outliers(Random rnd, int channel) => (float)(rnd.NextDouble() * 2 - 1) * (channel < 3 ? 10 : 1);
}
