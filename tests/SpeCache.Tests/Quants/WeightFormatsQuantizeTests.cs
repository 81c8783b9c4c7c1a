using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

public class WeightFormatsQuantizeTests
{
    static float[] RoundTrip(GgmlType type, float[] values)
    {
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, values.Length)];
        WeightFormats.QuantizeRow(type, values, bytes);
        var back = new float[values.Length];
        WeightFormats.DequantizeRow(type, bytes, back);
        return back;
    }

    [Fact]
    public void F32IsExact()
    {
        float[] values = [0f, -1.5f, 3.1415927f, float.MaxValue, float.Epsilon];
        Assert.Equal(values, RoundTrip(GgmlType.F32, values));
    }

    [Fact]
    public void F16RoundsToTheNearestHalf()
    {
        float[] values = [0f, -1.5f, 0.1f, 65504f, 1e6f];
        var back = RoundTrip(GgmlType.F16, values);
        for (int i = 0; i < values.Length; i++) Assert.Equal((float)(Half)values[i], back[i]);
        Assert.Equal(float.PositiveInfinity, back[4]);
    }

    [Fact]
    public void BF16RoundsToNearestEvenAndKeepsNaN()
    {
        float halfway = 1f + MathF.Pow(2, -8);          // exactly between 1 and the next bf16 (1 + 2^-7): ties to even, 1
        float aboveHalfway = 1f + 3 * MathF.Pow(2, -9); // nearer 1 + 2^-7
        var back = RoundTrip(GgmlType.BF16, [halfway, aboveHalfway, -2.5f, float.NaN, float.MaxValue]);
        Assert.Equal(1f, back[0]);
        Assert.Equal(1f + MathF.Pow(2, -7), back[1]);
        Assert.Equal(-2.5f, back[2]);
        Assert.True(float.IsNaN(back[3]));
        Assert.Equal(float.PositiveInfinity, back[4]); // max float rounds up past bf16's largest finite value, as in ggml
    }

    [Fact]
    public void RefusesWrongSizesAndUnknownFormats()
    {
        Assert.Throws<ArgumentException>(() => WeightFormats.QuantizeRow(GgmlType.F16, new float[4], new byte[4]));
        Assert.Throws<NotSupportedException>(() => WeightFormats.QuantizeRow(GgmlType.Q4_1, new float[32], new byte[20]));
    }
}
