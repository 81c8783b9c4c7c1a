using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SpeCache.Quants;

namespace SpeCache.Tensors;

/// <summary>
/// The CPU implementation of <see cref="IComputeBackend"/>. MatMul quantizes the activation rows
/// once to the format the weights pair with (<see cref="TypeTraits"/>), then splits weight rows
/// over a <see cref="WorkerPool"/>. Scratch memory is allocated once and grown, never per call.
/// Not thread-safe: one backend per inference thread.
/// </summary>
public sealed unsafe class CpuBackend : IComputeBackend, IDisposable
{
    /// <summary>Weight rows per scheduling unit: whole tiles, and enough rows that a split is worth its wake-up.</summary>
    const int RowGrain = 16;

    readonly WorkerPool _pool;
    readonly MatMulJob _matMul = new();
    readonly TiledMatMulJob _tiled = new();
    readonly QuantizeJob _quantize = new();
    byte[] _activations = [];

    /// <param name="threads">Threads to split work over, the caller's included; 0 means one per processor.</param>
    public CpuBackend(int threads = 0)
    {
        _pool = new WorkerPool(threads > 0 ? threads : Environment.ProcessorCount);
    }

    public IWorkerThreads Threads => _pool;

    public void MatMul(WeightTensor w, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        int cols = w.Cols;
        int rows = checked((int)w.Rows);
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n));
        if (x.Length < (long)n * cols) throw new ArgumentException($"x holds {x.Length} values, {n} rows of {cols} need {(long)n * cols}");
        if (y.Length < (long)n * rows) throw new ArgumentException($"y holds {y.Length} values, {n} rows of {rows} need {(long)n * rows}");
        var traits = TypeTraits.Of(w.Type);

        fixed (float* px = x)
        fixed (float* py = y)
        {
            MatMulJobBase job;
            var tiles = traits.Tiles;
            if (tiles == HalfTiles<ExactHalves>.Instance && F16.TakesScaledTile(n, w.HalvesFinite, x[..(n * cols)]))
                tiles = HalfTiles<ScaledHalves>.Instance;
            if (tiles != null)
            {
                int packedRowBytes = tiles.PackedRowBytes(cols);
                _tiled.Kernel = tiles;
                _tiled.Set(w, Quantize(tiles.PackRow, px, cols, packedRowBytes, n), packedRowBytes, py, n);
                job = _tiled;
            }
            else
            {
                int activationRowBytes = checked((int)GgmlTypeInfo.RowBytes(traits.ActivationType, cols));
                // Float weights read the float activations as they are.
                byte* activations = traits.ActivationType == GgmlType.F32
                    ? (byte*)px
                    : Quantize(traits.QuantizeActivation, px, cols, activationRowBytes, n);
                _matMul.Dot = traits.Dot;
                _matMul.Dot2 = traits.Dot2;
                _matMul.Set(w, activations, activationRowBytes, py, n);
                job = _matMul;
            }
            _pool.Run(job, rows, RowGrain);
            job.Activations = null;
            job.Output = null;
        }
    }

    /// <summary>The shared scratch buffer, at least <paramref name="bytes"/> long, from a cache line.</summary>
    byte* Scratch(long bytes)
    {
        long need = bytes + 64;
        if (_activations.Length < need)
            _activations = GC.AllocateUninitializedArray<byte>(checked((int)need), pinned: true);
        // Rows start on cache lines (packed row sizes are whole lines), so wide loads never straddle two.
        return (byte*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_activations)) + 63) & ~(nint)63);
    }

    /// <summary>Quantizes <paramref name="n"/> activation rows into the shared scratch buffer, split over the pool.</summary>
    byte* Quantize(QuantizeRowFn quantize, float* x, int cols, int rowBytes, int n)
    {
        byte* activations = Scratch((long)rowBytes * n);
        _quantize.Quantize = quantize;
        _quantize.Source = x;
        _quantize.Destination = activations;
        _quantize.Cols = cols;
        _quantize.RowBytes = rowBytes;
        _pool.Run(_quantize, n, grain: 4);
        _quantize.Source = null;
        return activations;
    }

    public void GetRow(WeightTensor w, long row, Span<float> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, w.Rows);
        WeightFormats.DequantizeRow(w.Type, w.Row(row), destination[..w.Cols]);
    }

    public void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, int width, float eps)
    {
        if (x.Length % width != 0 || y.Length < x.Length || weight.Length < width)
            throw new ArgumentException("RmsNorm: x must be whole rows of width values, y as long, weight one row");
        for (int r = 0; r < x.Length; r += width)
        {
            var xr = x.Slice(r, width);
            var yr = y.Slice(r, width);
            // TensorPrimitives sums in several vector lanes, so float accumulation error stays small.
            float ss = TensorPrimitives.SumOfSquares(xr);
            float scale = 1f / MathF.Sqrt(ss / width + eps);
            TensorPrimitives.Multiply(xr, scale, yr);
            TensorPrimitives.Multiply(yr, weight[..width], yr);
        }
    }

    public void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        if (up.Length < gate.Length) throw new ArgumentException("SwiGlu: up is shorter than gate");
        // silu(g) = g * sigmoid(g); chunks keep the sigmoid on the stack.
        Span<float> s = stackalloc float[512];
        for (int i = 0; i < gate.Length; i += s.Length)
        {
            var g = gate.Slice(i, Math.Min(s.Length, gate.Length - i));
            var sg = s[..g.Length];
            TensorPrimitives.Sigmoid(g, sg);
            TensorPrimitives.Multiply(g, sg, g);
            TensorPrimitives.Multiply(g, up.Slice(i, g.Length), g);
        }
    }

    public void Add(Span<float> x, ReadOnlySpan<float> y) => TensorPrimitives.Add(x, y[..x.Length], x);

    public void Dispose() => _pool.Dispose();
}
