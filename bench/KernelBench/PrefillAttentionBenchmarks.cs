using BenchmarkDotNet.Attributes;
using SpeCache.KvCache;

namespace SpeCache.KernelBench;

/// <summary>
/// The prefill attention kernel (<see cref="CausalAttention"/>): a chunk of 64 query rows after a
/// context of <see cref="Depth"/> positions, for one KV head of the Llama-3.2-1B shape (a GQA group
/// of 4 query heads, head size 64), keys and values as the full cache hands them over (float rows).
/// </summary>
[MemoryDiagnoser]
public class PrefillAttentionBenchmarks
{
    const int Rows = 64, HeadDim = 64, Group = 4;

    [Params(512, 4096)]
    public int Depth { get; set; }

    CausalAttention _attention = null!;
    float[] _keys = [], _values = [], _queries = [], _output = [];

    [GlobalSetup]
    public void Setup()
    {
        var rnd = new Random(1);
        float Next() => (float)(rnd.NextDouble() * 2 - 1);
        int positions = Depth + Rows;
        _keys = new float[positions * HeadDim];
        _values = new float[positions * HeadDim];
        for (int i = 0; i < _keys.Length; i++) (_keys[i], _values[i]) = (Next(), Next());
        _queries = new float[Rows * Group * HeadDim];
        for (int i = 0; i < _queries.Length; i++) _queries[i] = Next();
        _output = new float[_queries.Length];
        _attention = new CausalAttention(HeadDim, Group);
    }

    [Benchmark]
    public void Chunk() => _attention.Attend(_keys, _values, HeadDim, Depth, _queries, _output, Group * HeadDim, Rows, 0.125f);
}
