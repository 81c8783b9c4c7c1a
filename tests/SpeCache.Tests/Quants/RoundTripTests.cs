using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

/// <summary>Quantize then dequantize stays within each format's stated error bound.</summary>
public class RoundTripTests
{
    const int Cols = 4096;

    public static TheoryData<GgmlType, bool> Cases()
    {
        var data = new TheoryData<GgmlType, bool>();
        foreach (var t in new[] { GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K })
        {
            data.Add(t, false);
            data.Add(t, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ElementErrorWithinFormatBound(GgmlType type, bool outliers)
    {
        var x = outliers ? TestRows.WithOutliers(Cols, 11) : TestRows.Gaussian(Cols, 10);
        var y = TestRows.Dequantize(type, TestRows.Quantize(type, x), Cols);
        int block = GgmlTypeInfo.Geometry(type).BlockSize;
        for (int b = 0; b < Cols; b += Math.Max(block, 32))
        {
            int len = Math.Max(block, 32);
            float amax = 0;
            for (int i = b; i < b + len; i++) amax = Math.Max(amax, Math.Abs(x[i]));
            for (int i = b; i < b + len; i++)
            {
                double bound = Bound(type, x[i], amax);
                Assert.True(Math.Abs(x[i] - y[i]) <= bound, $"{type} [{i}]: {x[i]} -> {y[i]}, bound {bound}");
            }
        }
    }

    /// <summary>
    /// Worst case per value. Float formats: half the spacing at the value. Q8_0: half a step of
    /// amax/127 plus the half-precision rounding of the scale over 127 steps (2^-11 * 127 ≈ 0.06).
    /// Q4_0: one step of amax/8 (the largest magnitude maps to -8, so +amax clamps to +7).
    /// Q4_K/Q6_K: the scale search may trade a larger error on one value for a lower weighted total,
    /// and sub-block scales are themselves quantized, so we bound by one 4-bit (resp. 6-bit) step of the
    /// block's largest magnitude: 2 * amax / 15 and 2 * amax / 63 (the range can span -amax..amax).
    /// </summary>
    static double Bound(GgmlType type, float x, float amax) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => Math.Abs(x) * Math.Pow(2, -11) + Math.Pow(2, -25),
        GgmlType.BF16 => Math.Abs(x) * Math.Pow(2, -8),
        GgmlType.Q8_0 => amax / 127.0 * 0.57,
        GgmlType.Q4_0 => amax / 8.0 * 1.01,
        GgmlType.Q4_K => 2 * amax / 15.0,
        GgmlType.Q6_K => 2 * amax / 63.0,
        _ => throw new ArgumentException(type.ToString()),
    };

    [Theory]
    [InlineData(GgmlType.Q8_0, 0.007)]
    [InlineData(GgmlType.Q4_0, 0.11)]
    [InlineData(GgmlType.Q4_K, 0.09)]
    [InlineData(GgmlType.Q6_K, 0.025)]
    public void RmsErrorOfGaussianRow(GgmlType type, double maxRelativeRms)
    {
        // Relative RMS error on N(0, 1). A rounding step s gives RMS s / sqrt(12); with a 32-value
        // block's amax near 2.1σ, Q8_0's step 2.1σ/127 predicts 0.0048σ. Measured with this seed:
        // Q8_0 0.0053, Q4_0 0.085, Q4_K 0.070, Q6_K 0.0175. The bounds leave 25-45 % headroom; a
        // lost bit doubles a format's error and fails them.
        var x = TestRows.Gaussian(Cols, 12);
        var y = TestRows.Dequantize(type, TestRows.Quantize(type, x), Cols);
        double err = 0, sig = 0;
        for (int i = 0; i < Cols; i++)
        {
            err += (x[i] - y[i]) * (double)(x[i] - y[i]);
            sig += x[i] * (double)x[i];
        }
        double rel = Math.Sqrt(err / sig);
        Assert.True(rel <= maxRelativeRms, $"{type}: relative RMS {rel}");
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void ZeroRowStaysZero(GgmlType type)
    {
        var y = TestRows.Dequantize(type, TestRows.Quantize(type, new float[512]), 512);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void RowsThatAreNotWholeBlocksAreRefused()
    {
        Assert.Throws<ArgumentException>(() => WeightFormats.QuantizeRow(GgmlType.Q4_K, new float[300], new byte[1000]));
        Assert.Throws<ArgumentException>(() => WeightFormats.DequantizeRow(GgmlType.Q8_0, new byte[33], new float[32]));
    }

    [Fact]
    public void ActivationQ8_0MatchesReferenceIncludingTies()
    {
        // Amax 127 makes the scale exactly 1, so x.5 values are exact ties that roundf sends away from zero.
        var x = TestRows.Gaussian(1024, 13, 30f);
        for (int i = 0; i < x.Length; i += 32) x[i] = 127;
        for (int i = 1; i < x.Length; i += 7) x[i] = MathF.Round(x[i]) + 0.5f;
        var reference = new byte[Q8_0.BlockBytes * 32];
        var fast = new byte[reference.Length];
        Q8_0.QuantizeRow(x, reference);
        Q8_0.QuantizeActivationRow(x, fast);
        Assert.Equal(reference, fast);
    }

    [Fact]
    public void ActivationQ8_KMatchesReference()
    {
        // Scaled so many products land on exact halves (ties to even), plus zero and outlier blocks.
        var x = TestRows.WithOutliers(2048, 14);
        for (int i = 0; i < 256; i++) x[i] = 0;
        for (int i = 256; i < 512; i++) x[i] = (i % 9 - 4) * 0.5f;
        x[300] = -127;
        var reference = new byte[Q8_K.BlockBytes * 8];
        var fast = new byte[reference.Length];
        Q8_K.QuantizeRow(x, reference);
        Q8_K.QuantizeActivationRow(x, fast);
        Assert.Equal(reference, fast);
    }
}
