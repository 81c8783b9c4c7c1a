using SpeCache.Quants;

namespace SpeCache.Tensors;

/// <summary>One matmul's operands, as the jobs that split it by weight rows see them.</summary>
internal abstract unsafe class MatMulJobBase : IRangeJob
{
    public byte* Weights;
    public long WeightRowBytes;
    public byte* Activations;
    public int ActivationRowBytes;
    public float* Output;
    public int Rows, Cols, N;

    public void Set(WeightTensor w, byte* activations, int activationRowBytes, float* output, int n)
    {
        Weights = w.Data;
        WeightRowBytes = w.RowBytes;
        Activations = activations;
        ActivationRowBytes = activationRowBytes;
        Output = output;
        Rows = checked((int)w.Rows);
        Cols = w.Cols;
        N = n;
    }

    public abstract void Execute(int start, int end);
}

/// <summary>
/// <c>y[i, r] = dot(W[r], a[i])</c> over a range of weight rows. Tiled so each weight row is read
/// from memory once for all activation rows: a tile of weight rows stays in L1/L2 while a tile of
/// activation rows (kept in L2) passes over it. Every output is one call of the same dot, so the
/// result does not depend on the tiling or on the thread split.
/// </summary>
internal sealed unsafe class MatMulJob : MatMulJobBase
{
    const int WeightTile = 8;       // 8 rows of 4096 Q8_0 values: 35 KB
    const int ActivationTile = 64;  // 64 rows of 4096 Q8_0 values: 278 KB, within Zen 4's 1 MB L2

    public RowDotFn Dot = null!;
    public RowDot2Fn? Dot2;

    ReadOnlySpan<byte> Activation(int i) => new(Activations + (long)i * ActivationRowBytes, ActivationRowBytes);

    public override void Execute(int start, int end)
    {
        for (int r0 = start; r0 < end; r0 += WeightTile)
        {
            int r1 = Math.Min(end, r0 + WeightTile);
            for (int i0 = 0; i0 < N; i0 += ActivationTile)
            {
                int i1 = Math.Min(N, i0 + ActivationTile);
                for (int r = r0; r < r1; r++)
                {
                    var w = new ReadOnlySpan<byte>(Weights + r * WeightRowBytes, (int)WeightRowBytes);
                    int i = i0;
                    if (Dot2 is { } dot2)
                        for (; i + 1 < i1; i += 2)
                        {
                            dot2(w, Activation(i), Activation(i + 1), Cols, out float y0, out float y1);
                            Output[(long)i * Rows + r] = y0;
                            Output[(long)(i + 1) * Rows + r] = y1;
                        }
                    for (; i < i1; i++)
                        Output[(long)i * Rows + r] = Dot(w, Activation(i), Cols);
                }
            }
        }
    }
}

/// <summary>
/// <c>y[i, r] = dot(W[r], a[i])</c> over a range of weight rows with a <see cref="TileKernel"/>.
/// Activation rows go in panels that stay in L2 while the range's weight rows stream past them;
/// the kernel keeps each weight tile in L1 across the panel's activation tiles.
/// </summary>
internal sealed unsafe class TiledMatMulJob : MatMulJobBase
{
    const int Panel = 64; // 64 packed rows of 4096 values: 557 KB, within a 1 MB L2

    public TileKernel Kernel = null!;

    public override void Execute(int start, int end)
    {
        for (int i0 = 0; i0 < N; i0 += Panel)
            Kernel.Compute(Weights + start * WeightRowBytes, WeightRowBytes, end - start,
                Activations + (long)i0 * ActivationRowBytes, ActivationRowBytes, Math.Min(Panel, N - i0), Cols,
                Output + (long)i0 * Rows + start, Rows);
    }
}

/// <summary>Quantizes a range of activation rows to the format the weights are dotted with.</summary>
internal sealed unsafe class QuantizeJob : IRangeJob
{
    public QuantizeRowFn Quantize = null!;
    public float* Source;
    public byte* Destination;
    public int Cols, RowBytes;

    public void Execute(int start, int end)
    {
        for (int i = start; i < end; i++)
            Quantize(new ReadOnlySpan<float>(Source + (long)i * Cols, Cols), new Span<byte>(Destination + (long)i * RowBytes, RowBytes));
    }
}
