using System.Runtime.InteropServices;
using SpeCache.Quants;
using SpeCache.Tensors;

namespace SpeCache.Tests.Tensors;

/// <summary>A weight tensor in native memory (as a memory-mapped file would give), freed on dispose.</summary>
public sealed unsafe class TestWeights : IDisposable
{
    public TestWeights(GgmlType type, int rows, int cols, int seed)
    {
        long rowBytes = GgmlTypeInfo.RowBytes(type, cols);
        byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)(rowBytes * rows), 64);
        Dequantized = new float[rows][];
        for (int r = 0; r < rows; r++)
        {
            var values = Quants.TestRows.WithOutliers(cols, seed * 1000 + r);
            WeightFormats.QuantizeRow(type, values, new Span<byte>(data + r * rowBytes, (int)rowBytes));
            Dequantized[r] = new float[cols];
            WeightFormats.DequantizeRow(type, new ReadOnlySpan<byte>(data + r * rowBytes, (int)rowBytes), Dequantized[r]);
        }
        Tensor = new WeightTensor($"test.{type}", type, [cols, rows], data, rowBytes * rows);
    }

    public WeightTensor Tensor { get; }

    /// <summary>The weights as the kernels see them, row by row.</summary>
    public float[][] Dequantized { get; }

    public void Dispose() => NativeMemory.AlignedFree(Tensor.Data);
}
