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
}
