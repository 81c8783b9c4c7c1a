using SpeCache.KvCache;
using SpeCache.Tests.KvCache.Quantization;

namespace SpeCache.Tests.KvCache;

/// <summary>The prefill attention kernel (tiled, online softmax) against a plain two-pass softmax in doubles.</summary>
public class CausalAttentionTests
{
    /// <summary>Every kernel width (512, 256, scalar) on heads that fit it and heads that fall back, GQA groups of 1, 3 and 4.</summary>
    public static TheoryData<int, int, int> Shapes => new()
    {
        { 512, 64, 4 }, { 512, 128, 1 }, { 512, 80, 3 }, { 512, 16, 4 }, { 512, 8, 2 }, { 512, 12, 1 },
        { 256, 64, 4 }, { 256, 24, 3 }, { 256, 8, 1 },
        { 0, 64, 4 }, { 0, 8, 3 },
    };

    /// <summary>
    /// Chunks of 1 to 150 rows after 0 to 200 stored positions, so tiles end inside, on and past
    /// the 64-position edge and blocks of rows split, with each position's key and value inside a
    /// wider row (the other KV heads) and the queries inside wider rows too.
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesTwoPassSoftmax(int vectorBits, int headDim, int group)
    {
        var rng = new Random(headDim * 31 + group);
        var attention = new CausalAttention(headDim, group, vectorBits);
        int expectedBits = vectorBits == 512 && headDim % 16 == 0 ? 512 : vectorBits >= 256 && headDim % 8 == 0 ? 256 : 0;
        Assert.Equal(expectedBits, attention.VectorBits);
        foreach (var (first, rows) in new[] { (0, 1), (0, 70), (1, 3), (63, 1), (63, 2), (64, 17), (200, 150), (5, 64) })
        {
            int stride = headDim * 3, rowStride = group * headDim * 2 + 5, offset = headDim; // this head sits second in its rows
            int positions = first + rows;
            var keys = KiviTestData.Normals(rng, positions, stride);
            var values = KiviTestData.Normals(rng, positions, stride);
            var queries = KiviTestData.Normals(rng, rows, rowStride);
            var output = new float[rows * rowStride];
            float scale = 1f / MathF.Sqrt(headDim);
            attention.Attend(keys.AsSpan(offset), values.AsSpan(offset), stride, first, queries.AsSpan(offset), output.AsSpan(offset), rowStride, rows, scale);
            var expected = Reference(keys, values, stride, offset, first, queries, rowStride, rows, group, headDim, scale);
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < rowStride; j++)
                {
                    bool ours = j >= offset && j < offset + group * headDim;
                    float actual = output[i * rowStride + j];
                    if (!ours) Assert.True(actual == 0, $"row {i} value {j} outside the head was written");
                    else Assert.True(Math.Abs(actual - expected[i * rowStride + j]) <= 2e-5 * (1 + Math.Abs(expected[i * rowStride + j])),
                        $"{vectorBits}-bit, head {headDim}, group {group}, first {first}, rows {rows}: row {i} value {j} is {actual}, expected {expected[i * rowStride + j]}");
                }
        }
    }

    /// <summary>
    /// Scores far apart (keys growing 60x over the context, so the maximum grows tile after tile
    /// and the earlier tiles' weights vanish), against the same reference.
    /// </summary>
    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(0)]
    public void OnlineSoftmaxHoldsWhenTheMaximumKeepsGrowing(int vectorBits)
    {
        const int d = 64, group = 2, first = 300, rows = 20;
        var rng = new Random(5);
        var keys = KiviTestData.Normals(rng, first + rows, d);
        for (int t = 0; t < first + rows; t++)
            for (int i = 0; i < d; i++) keys[t * d + i] = keys[t * d + i] * 0.1f + t * 0.2f;
        var values = KiviTestData.Normals(rng, first + rows, d);
        var queries = KiviTestData.Normals(rng, rows, group * d);
        for (int i = 0; i < queries.Length; i++) queries[i] = Math.Abs(queries[i]);
        var output = new float[rows * group * d];
        new CausalAttention(d, group, vectorBits).Attend(keys, values, d, first, queries, output, group * d, rows, 1f);
        var expected = Reference(keys, values, d, 0, first, queries, group * d, rows, group, d, 1f);
        for (int i = 0; i < output.Length; i++)
            Assert.True(Math.Abs(output[i] - expected[i]) <= 1e-4 * (1 + Math.Abs(expected[i])), $"value {i}: {output[i]}, expected {expected[i]}");
    }

    /// <summary>Keys and values past a row's own position, however large, do not reach it.</summary>
    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(0)]
    public void RowsDoNotSeeLaterPositions(int vectorBits)
    {
        const int d = 16, group = 4, first = 10, rows = 30;
        var rng = new Random(9);
        var keys = KiviTestData.Normals(rng, first + rows, d);
        var values = KiviTestData.Normals(rng, first + rows, d);
        var queries = KiviTestData.Normals(rng, rows, group * d);
        var attention = new CausalAttention(d, group, vectorBits);
        var before = new float[queries.Length];
        attention.Attend(keys, values, d, first, queries, before, group * d, rows, 0.25f);
        // Positions from first + 20 on change; rows 0 .. 19 must not.
        for (int t = first + 20; t < first + rows; t++)
            for (int i = 0; i < d; i++) (keys[t * d + i], values[t * d + i]) = (1e30f, -1e30f);
        var after = new float[queries.Length];
        attention.Attend(keys, values, d, first, queries, after, group * d, rows, 0.25f);
        Assert.True(before.AsSpan(0, 20 * group * d).SequenceEqual(after.AsSpan(0, 20 * group * d)));
        Assert.False(before.AsSpan(20 * group * d).SequenceEqual(after.AsSpan(20 * group * d)));
    }

    [Fact]
    public void SpansTooShortAreRefused()
    {
        var attention = new CausalAttention(8, 2);
        var ex = Assert.Throws<ArgumentException>(() =>
            attention.Attend(new float[8 * 9], new float[8 * 10], 8, 5, new float[16 * 5], new float[16 * 5], 16, 5, 1f));
        Assert.Contains("too short", ex.Message);
        Assert.Throws<ArgumentException>(() =>
            attention.Attend(new float[80], new float[80], 8, 5, new float[16 * 4], new float[16 * 5], 16, 5, 1f));
    }

    /// <summary>Softmax attention in doubles, two passes, each row over positions 0 .. first + i.</summary>
    static float[] Reference(float[] keys, float[] values, int stride, int offset, int first, float[] queries, int rowStride, int rows, int group, int d, float scale)
    {
        var output = new float[rows * rowStride];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < group; j++)
            {
                int visible = first + i + 1, q = i * rowStride + offset + j * d;
                var scores = new double[visible];
                double max = double.NegativeInfinity, sum = 0;
                for (int t = 0; t < visible; t++)
                {
                    double s = 0;
                    for (int c = 0; c < d; c++) s += (double)queries[q + c] * keys[t * stride + offset + c];
                    scores[t] = s * scale;
                    max = Math.Max(max, scores[t]);
                }
                for (int t = 0; t < visible; t++) sum += scores[t] = Math.Exp(scores[t] - max);
                for (int c = 0; c < d; c++)
                {
                    double o = 0;
                    for (int t = 0; t < visible; t++) o += scores[t] * values[t * stride + offset + c];
                    output[q + c] = (float)(o / sum);
                }
            }
        return output;
    }
}
