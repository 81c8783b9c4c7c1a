using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

public class DotTests
{
    public static TheoryData<GgmlType> AllTypes() => new(GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K);

    /// <summary>The dispatched (vector) dot and the scalar reference of each quantized format.</summary>
    /// <summary>Every vector path of a format this CPU can run, and its scalar reference.</summary>
    static (RowDotFn[] Fast, RowDotFn Scalar) Kernels(GgmlType type)
    {
        bool v512 = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated, v256 = QuantMath.Simd256;
        RowDotFn[] Supported(params (bool Ok, RowDotFn Fn)[] paths) => [.. paths.Where(p => p.Ok).Select(p => p.Fn)];
        return type switch
        {
            GgmlType.Q8_0 => (Supported((v256, Q8_0.DotAvx2), (true, Q8_0.Dot128), (true, Q8_0.Dot)), Q8_0.DotScalar),
            GgmlType.Q4_0 => (Supported((v256, Q4_0.DotAvx2), (true, Q4_0.Dot128), (true, Q4_0.Dot)), Q4_0.DotScalar),
            GgmlType.Q4_K => (Supported((v256 && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported, Q4_K.DotAvx512), (v256, Q4_K.DotAvx2), (true, Q4_K.Dot)), Q4_K.DotScalar),
            GgmlType.Q6_K => (Supported((v256 && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported, Q6_K.DotAvx512), (v256, Q6_K.DotAvx2), (true, Q6_K.Dot)), Q6_K.DotScalar),
            GgmlType.F16 => (Supported((v512, F16.Dot512), (v256, F16.Dot256), (true, F16.Dot)), (w, x, n) => F16.DotScalar(w, x, n, 0, 0f)),
            GgmlType.BF16 => (Supported((v512, BF16.Dot512), (v256, BF16.Dot256), (true, BF16.Dot)), (w, x, n) => BF16.DotScalar(w, x, n, 0, 0f)),
            _ => throw new ArgumentException(type.ToString()),
        };
    }

    /// <summary>
    /// Integer paths are exact: with every scale 1 (weights and activations) all partial sums are
    /// integers below 2^24, so the vector kernel, the scalar kernel and a dot of the dequantized
    /// values must agree to the last bit. Random bytes reach every nibble/bit layout position.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void IntegerDotIsExactWithUnitScales(GgmlType type)
    {
        const int cols = 1024;
        var rng = new Random((int)type);
        var traits = TypeTraits.Of(type);
        var w = new byte[GgmlTypeInfo.RowBytes(type, cols)];
        var x = new byte[GgmlTypeInfo.RowBytes(traits.ActivationType, cols)];
        rng.NextBytes(w);
        rng.NextBytes(x);
        ushort one = BitConverter.HalfToUInt16Bits((Half)1);
        switch (type)
        {
            case GgmlType.Q8_0 or GgmlType.Q4_0:
                int wb = GgmlTypeInfo.Geometry(type).TypeSize;
                for (int b = 0; b < cols / 32; b++) BitConverter.TryWriteBytes(w.AsSpan(b * wb), one);
                for (int b = 0; b < cols / 32; b++)
                {
                    BitConverter.TryWriteBytes(x.AsSpan(b * 34), one);
                    // Activations never hold -128 (amax maps to ±127); the AVX2 sign trick relies on it.
                    for (int j = 2; j < 34; j++) if (x[b * 34 + j] == 0x80) x[b * 34 + j] = 0x81;
                }
                break;
            case GgmlType.Q4_K or GgmlType.Q6_K:
                for (int b = 0; b < cols / 256; b++)
                {
                    if (type == GgmlType.Q4_K)
                    {
                        BitConverter.TryWriteBytes(w.AsSpan(b * 144), one);
                        BitConverter.TryWriteBytes(w.AsSpan(b * 144 + 2), one);
                    }
                    else
                    {
                        BitConverter.TryWriteBytes(w.AsSpan(b * 210 + 208), one);
                    }
                    var xb = x.AsSpan(b * 292, 292);
                    BitConverter.TryWriteBytes(xb, 1f);
                    for (int j = 4; j < 260; j++) if (xb[j] == 0x80) xb[j] = 0x81;
                    // The group sums must be those of the bytes, as the quantizer writes them.
                    for (int g = 0; g < 16; g++)
                    {
                        int s = 0;
                        for (int i = 0; i < 16; i++) s += (sbyte)xb[4 + 16 * g + i];
                        BitConverter.TryWriteBytes(xb.Slice(260 + 2 * g), (short)s);
                    }
                }
                break;
        }
        var wf = TestRows.Dequantize(type, w, cols);
        var xf = TestRows.DequantizeActivation(type, x, cols);
        double expected = 0;
        for (int i = 0; i < cols; i++) expected += (double)wf[i] * xf[i];

        var (fast, scalar) = Kernels(type);
        Assert.Equal((float)expected, scalar(w, x, cols));
        foreach (var kernel in fast) Assert.Equal((float)expected, kernel(w, x, cols));
    }

    /// <summary>
    /// With real scales the kernels differ only in float summation order of per-block products,
    /// so they agree to a few ulps of the sum of magnitudes. Column counts cover a single block,
    /// odd block counts, and (for floats) lengths that are not a multiple of any vector width.
    /// </summary>
    public static TheoryData<GgmlType, float> TypesAndScales()
    {
        var data = new TheoryData<GgmlType, float>();
        foreach (var t in new[] { GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K })
        {
            data.Add(t, 1f);
            // Weights of real models are ~1e-2: K-quant scales then become subnormal halves.
            data.Add(t, 1e-3f);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(TypesAndScales))]
    public void VectorDotMatchesScalarReference(GgmlType type, float weightScale)
    {
        int block = GgmlTypeInfo.Geometry(type).BlockSize;
        foreach (int blocks in new[] { 1, 3, 17 })
        {
            int cols = block == 1 ? blocks * 37 + 5 : blocks * Math.Max(block, 32) * (block == 32 ? 3 : 1);
            var wx = TestRows.WithOutliers(cols, blocks).Select(v => v * weightScale).ToArray();
            var xx = TestRows.Gaussian(cols, blocks + 100);
            var w = TestRows.Quantize(type, wx);
            var x = TestRows.Activation(type, xx);
            var (fast, scalar) = Kernels(type);
            float s = scalar(w, x, cols);
            var wf = TestRows.Dequantize(type, w, cols);
            var xf = TestRows.DequantizeActivation(type, x, cols);
            double magnitude = 0;
            for (int i = 0; i < cols; i++) magnitude += Math.Abs((double)wf[i] * xf[i]);
            foreach (var kernel in fast)
            {
                float f = kernel(w, x, cols);
                Assert.True(Math.Abs(s - f) <= 1e-6 * magnitude, $"{type} cols {cols}: scalar {s}, vector {f}");
            }
        }
    }

    /// <summary>
    /// End to end: quantize activations, dot, compare with the double dot of the original floats.
    /// The error is that of the quantized weights and activations (relative RMS errors e_w and e_x
    /// of N(0,1) rows give ~sqrt(e_w² + e_x²) * |w||x| on the dot); bounds are per type.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F32, 1e-5)]
    [InlineData(GgmlType.F16, 1e-3)]
    [InlineData(GgmlType.BF16, 8e-3)]
    [InlineData(GgmlType.Q8_0, 0.02)]
    [InlineData(GgmlType.Q4_0, 0.15)]
    [InlineData(GgmlType.Q4_K, 0.12)]
    [InlineData(GgmlType.Q6_K, 0.04)]
    public void DotApproximatesFloatDot(GgmlType type, double tolerance)
    {
        const int cols = 2048;
        var wx = TestRows.Gaussian(cols, 21);
        var xx = TestRows.Gaussian(cols, 22);
        double exact = 0, nw = 0, nx = 0;
        for (int i = 0; i < cols; i++)
        {
            exact += (double)wx[i] * xx[i];
            nw += wx[i] * (double)wx[i];
            nx += xx[i] * (double)xx[i];
        }
        float got = TypeTraits.Of(type).Dot(TestRows.Quantize(type, wx), TestRows.Activation(type, xx), cols);
        // Normalized by |w||x| (≈ cols), since the dot itself of independent rows is near zero.
        Assert.True(Math.Abs(got - exact) <= tolerance * Math.Sqrt(nw * nx) / Math.Sqrt(cols) * 3,
            $"{type}: {got} vs {exact}");
    }

    [Fact]
    public void TwoRowDotIsBitIdenticalToTwoSingleDots()
    {
        // 1301 for the half formats: a 16-value step (F16) and a scalar tail after the 32-value loop.
        foreach (var (type, cols) in new[] { (GgmlType.Q4_K, 1280), (GgmlType.Q6_K, 1280), (GgmlType.BF16, 1280), (GgmlType.BF16, 1301), (GgmlType.F16, 1280), (GgmlType.F16, 1301) })
        {
            var traits = TypeTraits.Of(type);
            Assert.NotNull(traits.Dot2);
            var w = TestRows.Quantize(type, TestRows.WithOutliers(cols, 30).Select(v => v * 0.02f).ToArray());
            var a = TestRows.Activation(type, TestRows.Gaussian(cols, 31));
            var b = TestRows.Activation(type, TestRows.WithOutliers(cols, 32));
            traits.Dot2!(w, a, b, cols, out float ya, out float yb);
            Assert.Equal(BitConverter.SingleToInt32Bits(traits.Dot(w, a, cols)), BitConverter.SingleToInt32Bits(ya));
            Assert.Equal(BitConverter.SingleToInt32Bits(traits.Dot(w, b, cols)), BitConverter.SingleToInt32Bits(yb));
        }
    }
}
