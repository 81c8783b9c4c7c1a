using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using SpeCache.Quants;
using SpeCache.Tensors;

namespace SpeCache.KernelBench;

/// <summary>
/// One 2048 x 2048 weight (Llama-3.2-1B's attention projections) times n activation rows, for every
/// weight type: n = 1 is the decode matrix-vector product, 2 the speculative two-row decode, 64 a
/// prefill chunk. GOPS = 2 · 2048 · 2048 · n / time; the weight (4.2 MiB in Q8_0) stays in cache, so
/// this is the kernel's compute speed, not memory bandwidth (bench/MatMulBench measures that).
/// </summary>
[MemoryDiagnoser]
public unsafe class MatMulBenchmarks
{
    const int Dim = 2048;

    [Params(GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K)]
    public GgmlType Type { get; set; }

    [Params(1, 2, 64)]
    public int Rows { get; set; }

    CpuBackend _backend = null!;
    WeightTensor _weight = null!;
    byte* _data;
    float[] _x = [], _y = [];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        long rowBytes = GgmlTypeInfo.RowBytes(Type, Dim);
        _data = (byte*)NativeMemory.AlignedAlloc((nuint)(rowBytes * Dim), 64);
        var row = new float[Dim];
        for (int r = 0; r < Dim; r++)
        {
            for (int i = 0; i < Dim; i++) row[i] = (float)(rng.NextDouble() * 2 - 1) * 0.05f;
            WeightFormats.QuantizeRow(Type, row, new Span<byte>(_data + r * rowBytes, (int)rowBytes));
        }
        _weight = new WeightTensor("w", Type, [Dim, Dim], _data, rowBytes * Dim);
        _x = new float[Rows * Dim];
        for (int i = 0; i < _x.Length; i++) _x[i] = (float)(rng.NextDouble() * 2 - 1);
        _y = new float[Rows * Dim];
        _backend = new CpuBackend(1);
    }

    [Benchmark]
    public void MatMul() => _backend.MatMul(_weight, _x, _y, Rows);

    [GlobalCleanup]
    public void Cleanup()
    {
        _backend.Dispose();
        NativeMemory.AlignedFree(_data);
    }
}
