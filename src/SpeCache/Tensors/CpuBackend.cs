using System.Numerics.Tensors;
using SpeCache.Quants;

namespace SpeCache.Tensors;

/// <summary>Runs the model's compute on the CPU.</summary>
public sealed class CpuBackend : IComputeBackend, IDisposable
{
    [ThreadStatic] static float[]? t_row;

    public CpuBackend(int threads = 0) => ThreadCount = threads > 0 ? threads : Environment.ProcessorCount;

    public int ThreadCount { get; }

    public unsafe void MatMul(WeightTensor w, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        int cols = w.Cols;
        long rows = w.Rows;
        if (x.Length < n * cols || y.Length < n * rows)
            throw new ArgumentException($"matmul {w.Name}: buffers too small for {n} rows");
        fixed (float* px = x, py = y)
        {
            float* xp = px, yp = py;
            var options = new ParallelOptions { MaxDegreeOfParallelism = ThreadCount };
            Parallel.For(0L, rows, options, r =>
            {
                var row = t_row is { } buf && buf.Length >= cols ? buf : (t_row = new float[cols]);
                var rowSpan = row.AsSpan(0, cols);
                WeightFormats.DequantizeRow(w.Type, w.Row(r), rowSpan);
                for (int i = 0; i < n; i++)
                    yp[i * rows + r] = TensorPrimitives.Dot(rowSpan, new ReadOnlySpan<float>(xp + i * cols, cols));
            });
        }
    }

    public void GetRow(WeightTensor w, long row, Span<float> destination) =>
        WeightFormats.DequantizeRow(w.Type, w.Row(row), destination[..w.Cols]);

    public void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, int width, float eps)
    {
        for (int offset = 0; offset < x.Length; offset += width)
        {
            var xi = x.Slice(offset, width);
            float sumSquares = TensorPrimitives.SumOfSquares(xi);
            float scale = 1f / MathF.Sqrt(sumSquares / width + eps);
            var yi = y.Slice(offset, width);
            TensorPrimitives.Multiply(xi, scale, yi);
            TensorPrimitives.Multiply(yi, weight, yi);
        }
    }

    public void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        // silu(g) = g * sigmoid(g)
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    public void Add(Span<float> x, ReadOnlySpan<float> y) => TensorPrimitives.Add(x, y, x);

    public void Dispose() { }
}
