using SpeCache.KvCache;

namespace SpeCache.Tests.KvCache;

public class AttentionMathTests
{
    /// <summary>Short rows (the plain loop), long ones (the vector pass) and long ones with a tail past the last whole vector.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(100)]
    [InlineData(511)]
    [InlineData(512)]
    [InlineData(1000)]
    [InlineData(4099)]
    public void SoftMaxMatchesADoubleReference(int length)
    {
        var rng = new Random(length);
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(rng.NextDouble() * 60 - 40); // weights down to e^-60
        double max = x.Max(), sum = x.Sum(v => Math.Exp(v - max));
        var p = (float[])x.Clone();
        AttentionMath.SoftMax(p);
        for (int i = 0; i < length; i++)
        {
            double expected = Math.Exp(x[i] - max) / sum;
            // x - max rounded to float moves the exponential by up to |x - max| * 2^-24, relative.
            double tolerance = expected * (1e-6 + 1.2e-7 * (max - x[i]));
            if (!(Math.Abs(p[i] - expected) <= tolerance)) Assert.Fail($"{i} of {length}: {p[i]}, expected {expected}");
        }
    }

    [Theory]
    [InlineData(7)]
    [InlineData(512)]
    [InlineData(1000)]
    public void ExpSumGivesShiftedExponentialsAndTheirSumIntoAnotherRowOrInPlace(int length)
    {
        var rng = new Random(length + 1);
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(rng.NextDouble() * 30 - 20);
        const float shift = 12.5f; // above the max, as a caller's bound may be
        var into = new float[length + 3];
        Array.Fill(into, -1f);
        float sum = AttentionMath.ExpSum(x, shift, into);
        double expectedSum = 0;
        for (int i = 0; i < length; i++)
        {
            double expected = Math.Exp(x[i] - shift);
            expectedSum += expected;
            if (!(Math.Abs(into[i] - expected) <= expected * (1e-6 + 1.2e-7 * Math.Abs(x[i] - shift)))) Assert.Fail($"{i} of {length}: {into[i]}, expected {expected}");
        }
        Assert.Equal(expectedSum, sum, expectedSum * 1e-5);
        Assert.All(into[length..], v => Assert.Equal(-1f, v)); // nothing written past the row
        var inPlace = (float[])x.Clone();
        Assert.Equal(sum, AttentionMath.ExpSum(inPlace, shift, inPlace));
        Assert.Equal(into[..length], inPlace);
        Assert.Throws<ArgumentException>(() => AttentionMath.ExpSum(x, shift, new float[length - 1]));
    }

    [Theory]
    [InlineData(1, 5)]
    [InlineData(4, 16)]
    [InlineData(4, 1000)]
    [InlineData(3, 37)]
    public void MaxOfShiftedTakesEachPlacesLargestShiftedScoreOverTheRows(int rows, int length)
    {
        var rng = new Random(rows * 1000 + length);
        int stride = length + 9;
        var scores = new float[rows * stride];
        for (int i = 0; i < scores.Length; i++) scores[i] = (float)(rng.NextDouble() * 20 - 10);
        var shifts = new float[rows];
        for (int j = 0; j < rows; j++) shifts[j] = (float)(rng.NextDouble() * 4);
        var dest = new float[length];
        AttentionMath.MaxOfShifted(scores, stride, shifts, dest);
        for (int t = 0; t < length; t++)
        {
            float expected = float.NegativeInfinity;
            for (int j = 0; j < rows; j++) expected = MathF.Max(expected, scores[j * stride + t] - shifts[j]);
            Assert.Equal(expected, dest[t]);
        }
        Assert.Throws<ArgumentException>(() => AttentionMath.MaxOfShifted(scores.AsSpan(0, scores.Length - 10), stride, shifts, dest));
    }

    /// <summary>Both widths, whatever the CPU: without hardware support the vector types compute the same operations in software.</summary>
    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    public void VectorExpIsWithinTwoUlpOfTheDoubleOneAndZeroBelowFloatsRange(int lanes)
    {
        var rng = new Random(11);
        var x = new float[4096];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 175 - 87); // -87 .. 88
        float[] edges = [0f, -0f, 1e-8f, -1e-8f, 0.34657f, -0.34657f, 88f, -87.3f, -87.34f, -100f, float.NegativeInfinity, float.NaN, -1e10f];
        edges.CopyTo(x, 0);
        var e = new float[lanes];
        for (int i = 0; i < x.Length; i += lanes)
        {
            if (lanes == 16) System.Runtime.Intrinsics.Vector512.StoreUnsafe(AttentionMath.Exp(System.Runtime.Intrinsics.Vector512.Create(x.AsSpan(i, 16))), ref e[0]);
            else System.Runtime.Intrinsics.Vector256.StoreUnsafe(AttentionMath.Exp(System.Runtime.Intrinsics.Vector256.Create(x.AsSpan(i, 8))), ref e[0]);
            for (int j = 0; j < lanes; j++)
            {
                float v = x[i + j];
                double expected = v < -87.33f ? 0 : Math.Exp(v);
                if (float.IsNaN(v)) Assert.True(float.IsNaN(e[j]), $"e^NaN gave {e[j]}");
                else if (!(Math.Abs(e[j] - expected) <= 2.4e-7 * expected)) Assert.Fail($"{lanes} lanes: e^{v}: {e[j]}, expected {expected}");
            }
        }
    }
}
