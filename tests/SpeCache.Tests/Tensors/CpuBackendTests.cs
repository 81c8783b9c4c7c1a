using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Tests.Quants;

namespace SpeCache.Tests.Tensors;

public class CpuBackendTests
{
    public static TheoryData<GgmlType, int> MatMulCases()
    {
        var data = new TheoryData<GgmlType, int>();
        foreach (var t in new[] { GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K })
            foreach (int n in new[] { 1, 2, 7, 64 })
                data.Add(t, n);
        return data;
    }

    /// <summary>
    /// Columns: float types 101 (no vector width divides it, so the scalar tails run); 32-blocks
    /// 96 (an odd block count, so the unrolled loop's tail runs); K-quants 512. 37 rows is neither
    /// a multiple of the 16-row grain nor of 3 threads.
    /// </summary>
    static int ColsFor(GgmlType type) => GgmlTypeInfo.Geometry(type).BlockSize switch { 1 => 101, 32 => 96, _ => 512 };

    [Theory]
    [MemberData(nameof(MatMulCases))]
    public void MatMulMatchesFloatReference(GgmlType type, int n)
    {
        const int rows = 37;
        int cols = ColsFor(type);
        using var weights = new TestWeights(type, rows, cols, seed: n);
        var x = TestRows.WithOutliers(n * cols, 500 + n);
        var y = new float[n * rows];
        using (var backend = new CpuBackend(3))
            backend.MatMul(weights.Tensor, x, y, n);

        for (int i = 0; i < n; i++)
        {
            var xi = x.AsSpan(i * cols, cols);
            var dx = ActivationErrorBound(TypeTraits.Of(type).ActivationType, xi);
            for (int r = 0; r < rows; r++)
            {
                var w = weights.Dequantized[r];
                double exact = 0, magnitude = 0, quantization = 0;
                for (int k = 0; k < cols; k++)
                {
                    exact += (double)w[k] * xi[k];
                    magnitude += Math.Abs((double)w[k] * xi[k]);
                    quantization += Math.Abs(w[k]) * dx[k];
                }
                // Tolerance: the activation quantization's worst case, sum |w_k| * maxerr(x_k)
                // (zero for float types, which keep float activations), plus float rounding of
                // the summation, at most cols * 2^-24 * sum |w_k x_k|.
                double tolerance = quantization * (1 + 1e-6) + cols * Math.Pow(2, -24) * magnitude;
                Assert.True(Math.Abs(y[i * rows + r] - exact) <= tolerance,
                    $"{type} n={n} y[{i},{r}] = {y[i * rows + r]}, reference {exact}, tolerance {tolerance}");
            }
        }
    }

    /// <summary>
    /// Worst-case error per activation value. Q8_0: half a step of amax/127 plus the half-precision
    /// rounding of the scale over up to 127 steps (127 * 2^-11 ≈ 0.062 steps). Q8_K keeps a float
    /// scale, so half a step plus float rounding.
    /// </summary>
    static double[] ActivationErrorBound(GgmlType activation, ReadOnlySpan<float> x)
    {
        var bound = new double[x.Length];
        if (activation == GgmlType.F32) return bound;
        int block = activation == GgmlType.Q8_0 ? 32 : 256;
        double steps = activation == GgmlType.Q8_0 ? 0.5 + 127 * Math.Pow(2, -11) : 0.5 + 1e-5;
        for (int b = 0; b < x.Length; b += block)
        {
            float amax = 0;
            for (int k = b; k < b + block; k++) amax = Math.Max(amax, Math.Abs(x[k]));
            for (int k = b; k < b + block; k++) bound[k] = steps * amax / 127;
        }
        return bound;
    }

    [Theory]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void ThreadedResultsEqualSingleThreadedExactly(GgmlType type)
    {
        const int rows = 101, n = 9;
        int cols = ColsFor(type);
        using var weights = new TestWeights(type, rows, cols, seed: 3);
        var x = TestRows.Gaussian(n * cols, 4);
        var single = new float[n * rows];
        using (var backend = new CpuBackend(1))
            backend.MatMul(weights.Tensor, x, single, n);
        foreach (int threads in new[] { 2, 3, 5 })
        {
            var threaded = new float[n * rows];
            using var backend = new CpuBackend(threads);
            for (int repeat = 0; repeat < 3; repeat++)
            {
                backend.MatMul(weights.Tensor, x, threaded, n);
                Assert.Equal(single, threaded);
            }
        }
    }

    /// <summary>
    /// A row's outputs do not depend on how many rows share the matmul, nor on the thread split:
    /// a one-row decode, the two-row speculative decode, batched decode and prefill all give the
    /// same logits for the same input row. Every n from 1 to 70 (tile remainders 0..3 and more
    /// than one 64-row panel), 3 threads against 1.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    [InlineData(GgmlType.F32)]
    public void RowResultsDoNotDependOnRowCountOrThreads(GgmlType type)
    {
        const int rows = 38;
        int cols = ColsFor(type);
        using var weights = new TestWeights(type, rows, cols, seed: 8);
        var x = TestRows.WithOutliers(70 * cols, 9);
        var alone = new float[70 * rows];
        using var single = new CpuBackend(1);
        for (int i = 0; i < 70; i++)
            single.MatMul(weights.Tensor, x.AsSpan(i * cols, cols), alone.AsSpan(i * rows, rows), 1);
        using var threaded = new CpuBackend(3);
        for (int n = 1; n <= 70; n++)
        {
            var y = new float[n * rows];
            threaded.MatMul(weights.Tensor, x.AsSpan(0, n * cols), y, n);
            Assert.True(alone.AsSpan(0, n * rows).SequenceEqual(y), $"{type}: n = {n} differs from one row at a time");
        }
    }

    /// <summary>
    /// F16 weights take the short conversion against activations scaled by 2^112 where every half
    /// is finite and every activation below 2^16: each output must be the exact dot's bits
    /// (<see cref="F16.Dot"/>, one row at a time). A weight overflowed to infinity, a NaN weight and
    /// an activation of 10^5 each fall back to it, so infinities and NaNs land where the exact dot
    /// puts them; a stale "finite" flag or a missed range check would turn them into finite values.
    /// </summary>
    /// <remarks>
    /// Where <see cref="HalfTiles{T}"/> runs, one, three and six rows take its in-place tile (scaled:
    /// <c>HalfTiles&lt;ScaledHalves&gt;</c>), twenty (prefill) its table on AVX-512 (the exact
    /// conversion there) or the two-row dots on AVX2; elsewhere the row dots.
    /// </remarks>
    [Theory]
    [InlineData("finite", 1)]
    [InlineData("huge activation", 1)]
    [InlineData("finite", 3)]
    [InlineData("infinite weight", 3)]
    [InlineData("NaN weight", 3)]
    [InlineData("huge activation", 3)]
    [InlineData("finite", 6)]
    [InlineData("infinite weight", 6)]
    [InlineData("NaN weight", 6)]
    [InlineData("huge activation", 6)]
    [InlineData("finite", 20)]
    [InlineData("infinite weight", 20)]
    [InlineData("huge activation", 20)]
    public unsafe void F16MatMulGivesTheExactDotsBits(string what, int n)
    {
        const int rows = 21, cols = 103;
        using var weights = new TestWeights(GgmlType.F16, rows, cols, seed: 9);
        var halves = new Span<ushort>(weights.Tensor.Data, rows * cols);
        halves[5 * cols + 7] = 0x0001;      // the smallest subnormal
        halves[6 * cols + 8] = 0x8000;      // -0
        halves[7 * cols + 9] = 0x7BFF;      // 65504, the largest finite half
        if (what == "infinite weight") halves[8 * cols + 10] = 0xFC00;
        if (what == "NaN weight") halves[9 * cols + 11] = 0x7E00;
        var x = TestRows.WithOutliers(n * cols, 77);
        if (what == "huge activation") x[(n - 1) * cols + 4] = 1e5f;
        Assert.Equal(what is "finite" or "huge activation", weights.Tensor.HalvesFinite);
        var y = new float[n * rows];
        using (var backend = new CpuBackend(2))
            backend.MatMul(weights.Tensor, x, y, n);
        for (int i = 0; i < n; i++)
            for (int r = 0; r < rows; r++)
            {
                float expected = F16.Dot(weights.Tensor.Row(r), System.Runtime.InteropServices.MemoryMarshal.AsBytes(x.AsSpan(i * cols, cols)), cols);
                Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(y[i * rows + r]) || float.IsNaN(expected) && float.IsNaN(y[i * rows + r]),
                    $"{what}: y[{i},{r}] = {y[i * rows + r]}, the exact dot {expected}");
            }
    }

    /// <summary>
    /// The scaled reader's row dots alone (<see cref="ScaledHalves"/> against activations from
    /// <see cref="F16.ScaleActivations"/>, at the width this CPU's F16 kernels run), every length
    /// from 1 to 40 and a long odd one (vector loops and tails), bit for bit against the exact dot,
    /// and the two-row form each row's own bits.
    /// </summary>
    [Fact]
    public void F16ScaledDotIsTheExactDotsBits()
    {
        Assert.SkipUnless(Vector256.IsHardwareAccelerated, "the scaled reader runs where F16's kernels are vectors");
        var rng = new Random(31);
        foreach (int cols in Enumerable.Range(1, 40).Append(4099))
        {
            var w = new ushort[cols];
            for (int i = 0; i < cols; i++)
            {
                ushort h;
                do h = (ushort)rng.Next(65536); while ((h & 0x7C00) == 0x7C00);
                w[i] = h;
            }
            var x = TestRows.WithOutliers(cols, cols);
            var scaled = new float[cols];
            Assert.True(F16.ScaleActivations(x, scaled));
            var wb = MemoryMarshal.AsBytes(w.AsSpan());
            float expected = F16.Dot(wb, MemoryMarshal.AsBytes(x.AsSpan()), cols);
            float actual = ScaledDot(wb, scaled, cols);
            Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(actual));
            // Two activation rows at once: each the one-row call's bits, whichever of the two it is.
            var other = TestRows.WithOutliers(cols, cols + 1000);
            var otherScaled = new float[cols];
            Assert.True(F16.ScaleActivations(other, otherScaled));
            float first, second;
            if (Vector512.IsHardwareAccelerated)
                HalfRows.Dot2_512<ScaledHalves>(wb, MemoryMarshal.AsBytes(otherScaled.AsSpan()), MemoryMarshal.AsBytes(scaled.AsSpan()), cols, out first, out second);
            else
                HalfRows.Dot2_256<ScaledHalves>(wb, MemoryMarshal.AsBytes(otherScaled.AsSpan()), MemoryMarshal.AsBytes(scaled.AsSpan()), cols, out first, out second);
            Assert.Equal(BitConverter.SingleToUInt32Bits(ScaledDot(wb, otherScaled, cols)), BitConverter.SingleToUInt32Bits(first));
            Assert.Equal(BitConverter.SingleToUInt32Bits(actual), BitConverter.SingleToUInt32Bits(second));
        }
        Assert.False(F16.ScaleActivations([1f, 65536f], new float[2]));
        Assert.False(F16.ScaleActivations([float.NaN], new float[1]));
        Assert.True(F16.ScaleActivations([-65535f], new float[1]));

        static float ScaledDot(ReadOnlySpan<byte> w, float[] x, int cols) => Vector512.IsHardwareAccelerated
            ? HalfRows.Dot512<ScaledHalves>(w, MemoryMarshal.AsBytes(x.AsSpan()), cols)
            : HalfRows.Dot256<ScaledHalves>(w, MemoryMarshal.AsBytes(x.AsSpan()), cols);
    }

    [Fact]
    public void MatMulRejectsShortBuffers()
    {
        using var weights = new TestWeights(GgmlType.Q8_0, 4, 64, seed: 1);
        using var backend = new CpuBackend(1);
        Assert.Throws<ArgumentException>(() => backend.MatMul(weights.Tensor, new float[64], new float[8], 2));
        Assert.Throws<ArgumentException>(() => backend.MatMul(weights.Tensor, new float[128], new float[7], 2));
    }

    [Theory]
    [InlineData(GgmlType.BF16)]
    [InlineData(GgmlType.Q4_K)]
    public void GetRowDequantizesThatRow(GgmlType type)
    {
        using var weights = new TestWeights(type, 5, 256, seed: 2);
        using var backend = new CpuBackend(1);
        var row = new float[256];
        backend.GetRow(weights.Tensor, 3, row);
        Assert.Equal(weights.Dequantized[3], row);
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.GetRow(weights.Tensor, 5, row));
    }

    [Fact]
    public void RmsNormMatchesDefinition()
    {
        const int width = 67;
        var x = TestRows.WithOutliers(3 * width, 1);
        var w = TestRows.Gaussian(width, 2);
        var y = new float[x.Length];
        using var backend = new CpuBackend(1);
        backend.RmsNorm(x, w, y, width, 1e-5f);
        for (int r = 0; r < 3; r++)
        {
            double ss = 0;
            for (int k = 0; k < width; k++) ss += (double)x[r * width + k] * x[r * width + k];
            double inv = 1 / Math.Sqrt(ss / width + 1e-5);
            for (int k = 0; k < width; k++)
                Assert.Equal(x[r * width + k] * inv * w[k], y[r * width + k], 1e-5 * Math.Max(1, Math.Abs(x[r * width + k] * inv * w[k])));
        }
    }

    [Fact]
    public void SwiGluAndAddMatchDefinitions()
    {
        const int len = 1300; // more than one 512-value chunk, and a partial one
        var gate = TestRows.Gaussian(len, 5, 4f);
        var up = TestRows.Gaussian(len, 6);
        var expected = new double[len];
        for (int i = 0; i < len; i++) expected[i] = gate[i] / (1 + Math.Exp(-gate[i])) * up[i];
        using var backend = new CpuBackend(1);
        backend.SwiGlu(gate, up);
        for (int i = 0; i < len; i++) Assert.Equal(expected[i], gate[i], 1e-5 * Math.Max(1, Math.Abs(expected[i])));

        var sum = (float[])up.Clone();
        backend.Add(sum, gate);
        for (int i = 0; i < len; i++) Assert.Equal(up[i] + gate[i], sum[i]);
    }
}
