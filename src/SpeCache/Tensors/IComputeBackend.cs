namespace SpeCache.Tensors;

/// <summary>
/// The compute the transformer asks for, and nothing else. The model code never knows which
/// backend runs it or how a weight format is computed; a CUDA backend can implement this later
/// without touching <c>Transformer/</c>. Activations are row-major float rows: <c>n</c> rows of
/// <c>width</c> values each.
/// </summary>
public interface IComputeBackend
{
    /// <summary>
    /// The threads the backend splits its work over, lent to the KV caches for attention so that a
    /// step uses one set of threads, as many as the user asked for.
    /// </summary>
    IWorkerThreads Threads { get; }

    /// <summary><c>y[i, r] = dot(W[r, :], x[i, :])</c> for each of the <paramref name="n"/> input rows.</summary>
    void MatMul(WeightTensor w, ReadOnlySpan<float> x, Span<float> y, int n);

    /// <summary>Copies (dequantizing) row <paramref name="row"/> of <paramref name="w"/> into <paramref name="destination"/>.</summary>
    void GetRow(WeightTensor w, long row, Span<float> destination);

    /// <summary>RMSNorm of each <paramref name="width"/>-wide row of <paramref name="x"/>, times <paramref name="weight"/>.</summary>
    void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, int width, float eps);

    /// <summary><c>gate = silu(gate) * up</c>, elementwise.</summary>
    void SwiGlu(Span<float> gate, ReadOnlySpan<float> up);

    /// <summary><c>x += y</c>, elementwise.</summary>
    void Add(Span<float> x, ReadOnlySpan<float> y);
}
