using System.Buffers.Binary;
using SpeCache.KvCache.Quantization;

namespace SpeCache.Tests.KvCache.Quantization;

/// <summary>
/// The fused kernels against their scalar references (same math, so a tight tolerance) and against
/// "dequantize, then an ordinary float dot / weighted sum" (the meaning, looser because the kernels
/// regroup the sum as Σ (q s) code + Σ q z).
/// </summary>
public class KiviAttentionTests
{
    public static TheoryData<int, int, int> Formats() => KiviQuantizerTests.Formats();

    const int Seeds = 6;

    /// <summary>
    /// The vector kernels this CPU runs on <paramref name="format"/>, each checked against the scalar
    /// reference (on a CPU with AVX-512 all three widths, so the narrower kernels stay tested there
    /// too; with no hardware vectors none, and the scalar reference is still checked against the
    /// dequantized math).
    /// </summary>
    static KiviKernel[] VectorKernels(KiviFormat format) =>
        [.. new[] { KiviKernel.Vector128, KiviKernel.Vector256, KiviKernel.Vector512 }.Where(k => KiviAttention.Runs(k, format))];

    /// <summary>The scalar reference and every vector kernel that runs here.</summary>
    static KiviKernel[] AllKernels(KiviFormat format) => [KiviKernel.Scalar, .. VectorKernels(format)];

    static void Scores(KiviFormat format, ReadOnlySpan<float> queries, byte[] packed, Span<float> scores, KiviKernel kernel) =>
        KiviAttention.KeyScores(format, queries, packed, scores, format.GroupSize, kernel);

    static void Accumulate(KiviFormat format, ReadOnlySpan<float> p, byte[] tokens, Span<float> output, KiviKernel kernel)
    {
        int count = p.Length / (output.Length / format.HeadDim);
        KiviAttention.AccumulateValues(format, p, count, count, tokens, output, kernel);
    }

    static byte[] KeyGroup(KiviFormat format, Random rng, bool outliers)
    {
        var keys = outliers ? KiviTestData.WithOutlierChannels(rng, format.GroupSize, format.HeadDim) : KiviTestData.Normals(rng, format.GroupSize, format.HeadDim);
        var group = new byte[format.KeyGroupBytes];
        KiviQuantizer.QuantizeKeyGroup(format, keys, format.HeadDim, group);
        return group;
    }

    /// <summary>Σ_c |q_c| max_t |k̂_t,c|: the size of the terms a score sums, which sets how far float rounding can move it.</summary>
    static float[] ScoreMagnitudes(KiviFormat format, float[] queries, float[] dequantized)
    {
        int d = format.HeadDim, heads = queries.Length / d;
        var result = new float[heads];
        for (int h = 0; h < heads; h++)
            for (int c = 0; c < d; c++)
            {
                float largest = 0;
                for (int t = 0; t < format.GroupSize; t++) largest = MathF.Max(largest, MathF.Abs(dequantized[t * d + c]));
                result[h] += MathF.Abs(queries[h * d + c]) * largest;
            }
        return result;
    }

    /// <summary>
    /// Per head, the 6-bit weights' half step (how far they may move a score per set code: (max w − min w)
    /// / 126 over the padded channels) and the size of the terms its sum adds per set code, |low| + 63
    /// step; both 0 for kernels that keep floats.
    /// </summary>
    static (float HalfStep, float Term)[] WeightRounding(KiviFormat format, KiviKernel kernel, float[] queries, byte[] packed)
    {
        int d = format.HeadDim, heads = queries.Length / d;
        var result = new (float, float)[heads];
        if (!(kernel == KiviKernel.Vector256 && format.Bits == 1)) return result;
        var scales = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(packed.AsSpan(0, 2 * d));
        var weights = new float[format.KeyWordsPerToken * 32];
        var levels = new byte[weights.Length];
        for (int h = 0; h < heads; h++)
        {
            for (int c = 0; c < d; c++) weights[c] = queries[h * d + c] * (float)scales[c];
            var (low, step) = KiviAttention.SixBitWeights(weights, levels);
            result[h] = (step / 2, MathF.Abs(low) + KiviAttention.KeyWeightLevels * step);
        }
        return result;
    }

    /// <summary>Token t's codes that are 1 (its set channels).</summary>
    static int SetCodes(KiviFormat format, byte[] packed, int t)
    {
        int set = 0;
        for (int c = 0; c < format.HeadDim; c++) set += KiviCodes.ReadKey(packed.AsSpan(format.KeyCodesOffset), format, t, c);
        return set;
    }

    /// <summary>
    /// Per head, how far the 256-bit 1-bit value kernel's 6-bit token weights may move its sums: per
    /// span of 64 tokens half a unit (the span's largest p_t s_t over 63, its largest value group's) per
    /// token. 0 for heads it sums in floats: those past the last four, and every head of other kernels.
    /// </summary>
    static float[] FixedValueRounding(KiviFormat format, KiviKernel kernel, ReadOnlySpan<float> p, int count, int stride, byte[] tokens, int heads)
    {
        var result = new float[heads];
        if (!(kernel == KiviKernel.Vector256 && format.Bits == 1 && format.ValueGroupSize % 16 == 0)) return result;
        for (int h = 0; h < heads - heads % 4; h++)
            for (int start = 0; start < count; start += KiviAttention.FixedSpanTokens)
            {
                int end = Math.Min(count, start + KiviAttention.FixedSpanTokens);
                float largest = 0;
                for (int g = 0; g < format.ValueGroupsPerToken; g++)
                    for (int t = start; t < end; t++)
                        largest = MathF.Max(largest, p[h * stride + t] * (float)BinaryPrimitives.ReadHalfLittleEndian(tokens.AsSpan((int)format.ValueScaleOffset(t, g))));
                result[h] += largest / KiviAttention.ValueWeightLevels / 2 * (end - start) * 1.001f;
            }
        return result;
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void KeyScoresMatchScalarAndDequantizedDot(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        foreach (int heads in new[] { 1, 3, 4, 5, 8 })
            for (int seed = 0; seed < Seeds; seed++)
                CheckKeyScores(format, heads, new Random(seed * 31 + heads), outliers: seed % 2 == 1);
    }

    /// <summary>
    /// One random key group's scores for <paramref name="heads"/> query heads by every kernel that runs
    /// here, against the scalar form of its own arithmetic (tight) and against the exact dot with the
    /// dequantized keys, allowing the weights' rounding where the kernel rounds.
    /// </summary>
    static void CheckKeyScores(KiviFormat format, int heads, Random rng, bool outliers)
    {
        int headDim = format.HeadDim, group = format.GroupSize;
        var keys = new float[group * headDim];
        var packed = KeyGroup(format, rng, outliers);
        var queries = KiviTestData.Normals(rng, heads, headDim);
        KiviQuantizer.DequantizeKeyGroup(format, packed, keys);
        var magnitude = ScoreMagnitudes(format, queries, keys);
        foreach (var kernel in AllKernels(format))
        {
            var reference = new float[heads * group];
            KiviAttention.KeyScoresReference(kernel, format, queries, packed, reference, group);
            var rounding = WeightRounding(format, kernel, queries, packed);
            var fused = new float[heads * group];
            Scores(format, queries, packed, fused, kernel);
            for (int h = 0; h < heads; h++)
                for (int t = 0; t < group; t++)
                {
                    double dot = 0;
                    for (int c = 0; c < headDim; c++) dot += (double)queries[h * headDim + c] * keys[t * headDim + c];
                    float s = fused[h * group + t];
                    int set = SetCodes(format, packed, t);
                    // Float rounding grows with the terms summed: the rounded weights' reach past the score's own size.
                    float terms = magnitude[h] + rounding[h].Term * set;
                    if (!(MathF.Abs(s - reference[h * group + t]) <= 2e-6f * terms + 1e-6f)) Assert.Fail($"{kernel}: head {h} token {t}: {s}, its scalar reference {reference[h * group + t]}");
                    if (!(Math.Abs(s - dot) <= rounding[h].HalfStep * set + 2e-5 * terms + 1e-5)) Assert.Fail($"{kernel}: head {h} token {t}: {s}, dequantized dot {dot}");
                }
        }
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(128, 32)]
    [InlineData(8, 16)] // one word of 32 channels, 24 of them padding
    [InlineData(48, 16)]
    public void SixBitWeightScoresStayWithinHalfAStepPerSetCodeOfTheExactSum(int headDim, int group)
    {
        var format = new KiviFormat(headDim, group, 1);
        var rng = new Random(headDim + group);
        double worst = 0;
        for (int seed = 0; seed < Seeds; seed++)
        {
            var packed = KeyGroup(format, rng, outliers: seed % 2 == 0);
            var queries = KiviTestData.Normals(rng, 3, headDim);
            var exact = new float[3 * group];
            var rounded = new float[3 * group];
            KiviAttention.KeyScoresScalar(format, queries, packed, exact);
            KiviAttention.KeyScoresSixBitScalar(format, queries, packed, rounded, group);
            var rounding = WeightRounding(format, KiviKernel.Vector256, queries, packed);
            for (int h = 0; h < 3; h++)
                for (int t = 0; t < group; t++)
                {
                    int set = SetCodes(format, packed, t);
                    double moved = Math.Abs(rounded[h * group + t] - exact[h * group + t]);
                    double bound = rounding[h].HalfStep * set + 2e-6 * rounding[h].Term * set + 1e-5 * (1 + Math.Abs(exact[h * group + t]));
                    if (!(moved <= bound)) Assert.Fail($"head {h} token {t}: moved {moved} by weight rounding, bound {bound}");
                    worst = Math.Max(worst, moved / Math.Max(bound, 1e-12));
                }
        }
        // The rounding is real (scores do move) and the bound is not loose by orders of magnitude.
        Assert.InRange(worst, 0.01, 1.0);
    }

    [Theory]
    [InlineData(false, 0.08)] // measured 0.055
    [InlineData(true, 0.12)]  // measured 0.085
    public void WeightRoundingIsSmallBesideTheOneBitCodesOwnError(bool outliers, double most)
    {
        // Scores of the true float keys, of their 1-bit codes (exact sum) and of the codes with 6-bit weights.
        var format = new KiviFormat(64, 64, 1);
        var rng = new Random(outliers ? 2 : 1);
        double codeError = 0, weightError = 0;
        for (int rep = 0; rep < 20; rep++)
        {
            var keys = outliers ? KiviTestData.WithOutlierChannels(rng, 64, 64) : KiviTestData.Normals(rng, 64, 64);
            var packed = new byte[format.KeyGroupBytes];
            KiviQuantizer.QuantizeKeyGroup(format, keys, 64, packed);
            var queries = KiviTestData.Normals(rng, 4, 64);
            var exact = new float[4 * 64];
            var rounded = new float[4 * 64];
            KiviAttention.KeyScoresScalar(format, queries, packed, exact);
            KiviAttention.KeyScoresSixBitScalar(format, queries, packed, rounded, 64);
            for (int h = 0; h < 4; h++)
                for (int t = 0; t < 64; t++)
                {
                    double truth = 0;
                    for (int c = 0; c < 64; c++) truth += (double)queries[h * 64 + c] * keys[t * 64 + c];
                    codeError += Math.Pow(exact[h * 64 + t] - truth, 2);
                    weightError += Math.Pow(rounded[h * 64 + t] - exact[h * 64 + t], 2);
                }
        }
        double ratio = Math.Sqrt(weightError / codeError);
        Assert.InRange(ratio, 1e-4, most);
    }

    [Theory]
    [InlineData(64, 128, 8)]  // two chunks of 64 tokens a group, eight heads' weights at once
    [InlineData(64, 256, 2)]  // four chunks, each head's weights alone
    [InlineData(48, 256, 5)]  // a padded word
    public void OneBitKeyScoresOfLongGroupsMatchTheirReference(int headDim, int group, int heads)
    {
        var format = new KiviFormat(headDim, group, 1);
        var rng = new Random(group + heads);
        for (int seed = 0; seed < 3; seed++) CheckKeyScores(format, heads, rng, outliers: seed == 1);
    }

    [Theory]
    [InlineData(8)] // the weights of eight heads at once
    [InlineData(1)] // one head's alone
    public void NarrowWeightsFarFromZeroKeepTheirLevelsInRange(int heads)
    {
        // Every weight q_c s_c within 0.06 of 1000, so the levels come from differences far below the
        // weights themselves: the scores stay within the rounding's bound of the exact sum.
        var format = new KiviFormat(64, 32, 1);
        var group = new byte[format.KeyGroupBytes];
        for (int c = 0; c < 64; c++) BinaryPrimitives.WriteHalfLittleEndian(group.AsSpan(2 * c), (Half)1f);
        new Random(5).NextBytes(group.AsSpan(format.KeyCodesOffset));
        var queries = new float[heads * 64];
        for (int i = 0; i < queries.Length; i++) queries[i] = 1000f + 0.001f * (i % 64);
        var exact = new float[heads * 32];
        KiviAttention.KeyScoresScalar(format, queries, group, exact);
        foreach (var kernel in AllKernels(format))
        {
            var scores = new float[heads * 32];
            Scores(format, queries, group, scores, kernel);
            var rounding = WeightRounding(format, kernel, queries, group);
            for (int h = 0; h < heads; h++)
                for (int t = 0; t < 32; t++)
                {
                    int set = SetCodes(format, group, t);
                    float s = scores[h * 32 + t], want = exact[h * 32 + t];
                    if (!(MathF.Abs(s - want) <= rounding[h].HalfStep * set + 2e-6f * 1000 * set + 1e-3f)) Assert.Fail($"{kernel}: head {h} token {t}: {s}, exact {want}");
                }
        }
    }

    [Fact]
    public void SixBitWeightsSpanTheRangeAndRoundHalfToEven()
    {
        var levels = new byte[6];
        // low 0 and step 1 (the range 63): the ends map to 0 and 63, and halves are ties, which go to the even level.
        var (low, step) = KiviAttention.SixBitWeights([0f, 63f, 31.5f, 0.5f, 1.5f, 2.4f], levels);
        Assert.Equal(0f, low);
        Assert.Equal(1f, step);
        Assert.Equal([0, 63, 32, 0, 2, 2], levels);

        Array.Fill(levels, (byte)9);
        Assert.Equal((2.5f, 0f), KiviAttention.SixBitWeights([2.5f, 2.5f, 2.5f], levels.AsSpan(0, 3)));
        Assert.All(levels[..3], b => Assert.Equal(0, b));
        Assert.True(float.IsNaN(KiviAttention.SixBitWeights([1f, float.NaN, 3f], levels).Low));
    }

    [Fact]
    public void SixBitWeightKernelScoresAreNaNWhenAQueryIsNaN()
    {
        var format = new KiviFormat(64, 32, 1);
        if (!KiviAttention.Runs(KiviKernel.Vector256, format)) return;
        var rng = new Random(3);
        var packed = KeyGroup(format, rng, outliers: false);
        var queries = KiviTestData.Normals(rng, 4, 64);
        queries[70] = float.NaN; // head 1
        var scores = new float[4 * 32];
        Scores(format, queries, packed, scores, KiviKernel.Vector256);
        for (int h = 0; h < 4; h++)
            for (int t = 0; t < 32; t++)
                Assert.Equal(h == 1, float.IsNaN(scores[h * 32 + t]));
    }

    [Theory]
    [InlineData(128, 32, 1, 4)]
    [InlineData(64, 32, 1, 37)] // at 1 bit on 256-bit vectors: four batches of 8 heads' weights side by side, 5 heads one at a time
    [InlineData(128, 64, 2, 7)]
    [InlineData(64, 32, 4, 8)]
    public void GroupedQueryHeadsEqualOneCallPerHead(int headDim, int group, int bits, int heads)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(heads);
        var packed = KeyGroup(format, rng, outliers: true);
        var queries = KiviTestData.Normals(rng, heads, headDim);
        var keys = new float[group * headDim];
        KiviQuantizer.DequantizeKeyGroup(format, packed, keys);
        var magnitude = ScoreMagnitudes(format, queries, keys);
        foreach (var kernel in AllKernels(format))
        {
            var together = new float[heads * group];
            Scores(format, queries, packed, together, kernel);
            var alone = new float[group];
            for (int h = 0; h < heads; h++)
            {
                Scores(format, queries.AsSpan(h * headDim, headDim), packed, alone, kernel);
                for (int t = 0; t < group; t++)
                    if (!(MathF.Abs(together[h * group + t] - alone[t]) <= 2e-6f * magnitude[h] + 1e-6f)) Assert.Fail($"{kernel}: head {h} token {t}: {together[h * group + t]} vs {alone[t]}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void AccumulateValuesMatchesScalarAndDequantizedSum(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        // Counts that are not whole blocks of 16 leave a block part empty; 150 is many blocks and a part.
        foreach (int count in new[] { 1, 7, 32, 64, 150 })
            for (int seed = 0; seed < Seeds; seed++)
            {
                var rng = new Random(5000 + seed * 7 + count);
                var values = KiviTestData.Normals(rng, count, headDim);
                // Empty lanes of a part-filled block hold junk (all ones: NaN scales and zeros) that must not count.
                var tokens = new byte[format.ValueBytes(count)];
                Array.Fill(tokens, (byte)0xFF);
                var dequantized = new float[count * headDim];
                for (int t = 0; t < count; t++)
                {
                    KiviQuantizer.QuantizeValueToken(format, values.AsSpan(t * headDim, headDim), tokens, t);
                    KiviQuantizer.DequantizeValueToken(format, tokens, t, dequantized.AsSpan(t * headDim, headDim));
                }
                // Softmax of random scores, as attention would give.
                var p = KiviTestData.Normals(rng, 1, count);
                System.Numerics.Tensors.TensorPrimitives.SoftMax(p, p);
                var start = KiviTestData.Normals(rng, 1, headDim); // the kernels add into what is there
                var scalar = (float[])start.Clone();
                KiviAttention.AccumulateValuesScalar(format, p, tokens, scalar);
                float magnitude = 0;
                for (int t = 0; t < count; t++)
                    for (int c = 0; c < headDim; c++) magnitude = MathF.Max(magnitude, MathF.Abs(dequantized[t * headDim + c]));
                foreach (var kernel in AllKernels(format))
                {
                    var fused = (float[])start.Clone();
                    Accumulate(format, p, tokens, fused, kernel);
                    for (int c = 0; c < headDim; c++)
                    {
                        double sum = start[c];
                        for (int t = 0; t < count; t++) sum += (double)p[t] * dequantized[t * headDim + c];
                        float tolerance = 1e-5f * (magnitude + MathF.Abs(start[c])) + 1e-6f; // one head: every kernel sums in floats
                        if (!(MathF.Abs(fused[c] - scalar[c]) <= tolerance)) Assert.Fail($"{kernel}: {count} tokens, channel {c}: {fused[c]}, scalar {scalar[c]}");
                        if (!(Math.Abs(fused[c] - sum) <= tolerance)) Assert.Fail($"{kernel}: {count} tokens, channel {c}: {fused[c]}, dequantized sum {sum}");
                    }
                }
            }
    }

    [Theory]
    [InlineData(128, 32, 1, 4, 70)]
    [InlineData(128, 64, 2, 5, 33)]
    [InlineData(64, 32, 4, 8, 150)]
    [InlineData(64, 64, 1, 2, 9)]
    [InlineData(64, 64, 1, 13, 70)] // eight heads at once (a decode step's two rows), then four, then one
    [InlineData(128, 32, 1, 8, 33)]
    public void GroupedQueryHeadsAccumulateAsOneCallPerHead(int headDim, int group, int bits, int heads, int count)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(heads * 100 + count);
        var values = KiviTestData.Normals(rng, count, headDim);
        var tokens = new byte[format.ValueBytes(count)];
        for (int t = 0; t < count; t++)
            KiviQuantizer.QuantizeValueToken(format, values.AsSpan(t * headDim, headDim), tokens, t);
        var p = KiviTestData.Normals(rng, heads, count);
        for (int h = 0; h < heads; h++) System.Numerics.Tensors.TensorPrimitives.SoftMax(p.AsSpan(h * count, count), p.AsSpan(h * count, count));
        var start = KiviTestData.Normals(rng, heads, headDim);
        var scalar = (float[])start.Clone();
        KiviAttention.AccumulateValuesScalar(format, p, tokens, scalar);
        foreach (var kernel in AllKernels(format))
        {
            var together = (float[])start.Clone();
            Accumulate(format, p, tokens, together, kernel);
            var rounding = FixedValueRounding(format, kernel, p, count, count, tokens, heads);
            for (int h = 0; h < heads; h++)
            {
                var alone = start.AsSpan(h * headDim, headDim).ToArray();
                Accumulate(format, p.AsSpan(h * count, count), tokens, alone, kernel);
                for (int c = 0; c < headDim; c++)
                {
                    float tolerance = 1e-5f * (4 + MathF.Abs(start[h * headDim + c])) + rounding[h];
                    if (!(MathF.Abs(together[h * headDim + c] - alone[c]) <= tolerance)) Assert.Fail($"{kernel}: head {h} channel {c}: together {together[h * headDim + c]}, alone {alone[c]}");
                    if (!(MathF.Abs(together[h * headDim + c] - scalar[h * headDim + c]) <= tolerance)) Assert.Fail($"{kernel}: head {h} channel {c}: together {together[h * headDim + c]}, scalar {scalar[h * headDim + c]}");
                }
            }
        }
    }

    [Theory]
    [InlineData(64, 64, 1, 4)]   // the 512-bit kernel's own max: two pairs of heads, two words
    [InlineData(64, 32, 1, 13)]  // four, four, four and one head
    [InlineData(128, 64, 1, 5)]  // four words
    [InlineData(8, 16, 1, 3)]    // one word, mostly padding channels
    [InlineData(128, 32, 2, 5)]  // the others: the max of the written scores
    [InlineData(64, 32, 4, 8)]
    public void KeyScoresWithMaximaWriteTheSameScoresAndRaiseEachHeadsMax(int headDim, int group, int bits, int heads)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(7 * heads + bits);
        int stride = 2 * group + 3;
        foreach (bool nan in new[] { false, true })
        {
            var packed = KeyGroup(format, rng, outliers: true);
            var queries = KiviTestData.Normals(rng, heads, headDim);
            if (nan) queries[(heads - 1) * headDim + headDim / 2] = float.NaN; // the last head's scores all NaN
            var expected = new float[heads * stride];
            KiviAttention.KeyScores(format, queries, packed, expected, stride);
            var rows = new float[heads * stride];
            // Maxima from earlier groups: one above every score of this one (kept), the rest below (raised).
            var maxima = Enumerable.Range(0, heads).Select(h => h == 0 ? 1e6f : -1e6f).ToArray();
            KiviAttention.KeyScores(format, queries, packed, rows, stride, maxima);
            Assert.Equal(expected, rows);
            for (int h = 0; h < heads; h++)
            {
                float groupMax = expected.AsSpan(h * stride, group).ToArray().Max();
                float want = nan && h == heads - 1 ? float.NaN : h == 0 ? 1e6f : groupMax;
                Assert.Equal(want, maxima[h]);
            }
        }
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[heads * headDim], new byte[format.KeyGroupBytes], new float[heads * stride], stride, new float[heads - 1]));
    }

    [Theory]
    [InlineData(64, 64, 1, 4, 3)]   // the 512-bit kernel's own pass: two pairs of heads, two words, three groups
    [InlineData(64, 32, 1, 8, 5)]   // two fours (a decode step's real and speculative rows)
    [InlineData(128, 64, 1, 7, 2)]  // a four and three ones, four words
    [InlineData(8, 16, 1, 3, 4)]    // one word, mostly padding channels
    [InlineData(64, 64, 1, 4, 1)]
    [InlineData(128, 32, 2, 5, 3)]  // the others: group by group
    [InlineData(64, 32, 4, 8, 2)]
    public void KeyScoresOverGroupsEqualOneCallPerGroup(int headDim, int group, int bits, int heads, int groupCount)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(11 * heads + groupCount);
        int stride = groupCount * group + 5;
        foreach (string poison in new[] { "none", "NaN query", "NaN scale in the middle group", "infinite scale in the first group" })
        {
            var groups = new byte[groupCount * format.KeyGroupBytes];
            for (int j = 0; j < groupCount; j++) KeyGroup(format, rng, outliers: true).CopyTo(groups, j * format.KeyGroupBytes);
            var queries = KiviTestData.Normals(rng, heads, headDim);
            // A NaN or infinite scale poisons one group's scores only: the groups after it must not hide
            // that from the max (a lane max drops a NaN once a later score replaces it).
            if (poison == "NaN query") queries[(heads - 1) * headDim + headDim / 2] = float.NaN;
            if (poison == "NaN scale in the middle group") BinaryPrimitives.WriteHalfLittleEndian(groups.AsSpan(groupCount / 2 * format.KeyGroupBytes + 6), Half.NaN);
            if (poison == "infinite scale in the first group") BinaryPrimitives.WriteHalfLittleEndian(groups.AsSpan(2), Half.PositiveInfinity);

            var expected = new float[heads * stride];
            Array.Fill(expected, -12345f);
            for (int j = 0; j < groupCount; j++)
                KiviAttention.KeyScores(format, queries, groups.AsSpan(j * format.KeyGroupBytes, format.KeyGroupBytes), expected.AsSpan(j * group), stride);
            var rows = new float[heads * stride];
            Array.Fill(rows, -12345f);
            var maxima = Enumerable.Range(0, heads).Select(h => h == 0 ? 1e6f : -1e6f).ToArray();
            KiviAttention.KeyScores(format, queries, groups, groupCount, rows, stride, maxima);
            Assert.Equal(expected, rows); // the same scores, and nothing written past each row's groups
            var withoutMaxima = new float[heads * stride];
            Array.Fill(withoutMaxima, -12345f);
            KiviAttention.KeyScores(format, queries, groups, groupCount, withoutMaxima, stride, []);
            Assert.Equal(expected, withoutMaxima);
            for (int h = 0; h < heads; h++)
            {
                float rowMax = System.Numerics.Tensors.TensorPrimitives.Max(expected.AsSpan(h * stride, groupCount * group));
                float want = float.IsNaN(rowMax) ? float.NaN : h == 0 ? MathF.Max(1e6f, rowMax) : rowMax;
                Assert.True(want.Equals(maxima[h]), $"{poison}: head {h}: max {maxima[h]}, the scores' {want}");
            }
            if (poison != "none") Assert.Contains(maxima, float.IsNaN); // each poison reaches some head's scores
        }
    }

    [Fact]
    public void KeyScoresOverGroupsRejectMisshapenArguments()
    {
        var format = new KiviFormat(64, 32, 1);
        var groups = new byte[3 * format.KeyGroupBytes];
        var maxima = new float[2];
        var empty = new float[2];
        KiviAttention.KeyScores(format, new float[128], groups, 0, [], 0, empty); // no groups: nothing to do
        Assert.Equal(new float[2], empty);
        Assert.Throws<ArgumentOutOfRangeException>(() => KiviAttention.KeyScores(format, new float[128], groups, -1, new float[200], 100, maxima));
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[128], groups.AsSpan(1), 3, new float[200], 100, maxima));  // 3 groups, a byte short
        Assert.Throws<ArgumentOutOfRangeException>(() => KiviAttention.KeyScores(format, new float[128], groups, 3, new float[200], 95, maxima)); // rows of 96 overlap
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[128], groups, 3, new float[195], 100, maxima));           // second row ends at 196
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[128], groups, 3, new float[200], 100, new float[1]));     // one max for two heads
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[100], groups, 3, new float[200], 100, maxima));          // not whole heads
    }

    [Theory]
    [InlineData(64, 64, 1, 4)]
    [InlineData(128, 32, 2, 5)]
    [InlineData(64, 32, 4, 8)]
    public void StridedKeyScoresLandInEachHeadsRowAndNowhereElse(int headDim, int group, int bits, int heads)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(31 * heads + bits);
        var packed = KeyGroup(format, rng, outliers: true);
        var queries = KiviTestData.Normals(rng, heads, headDim);
        // Rows of a longer context, the group's scores at an offset of 7 in each: the rest must keep its sentinel.
        int stride = 3 * group + 5, offset = 7;
        foreach (var kernel in AllKernels(format))
        {
            // The same kernel unstrided: the stride changes where scores land, not their bits.
            var packedScores = new float[heads * group];
            Scores(format, queries, packed, packedScores, kernel);
            var rows = new float[heads * stride];
            Array.Fill(rows, -12345f);
            KiviAttention.KeyScores(format, queries, packed, rows.AsSpan(offset), stride, kernel);
            for (int h = 0; h < heads; h++)
                for (int t = 0; t < stride; t++)
                {
                    float actual = rows[h * stride + t];
                    if (t < offset || t >= offset + group)
                    {
                        if (actual != -12345f) Assert.Fail($"{kernel}: head {h}, place {t} outside the group was written ({actual})");
                        continue;
                    }
                    float expected = packedScores[h * group + t - offset];
                    if (actual != expected) Assert.Fail($"{kernel}: head {h}, token {t - offset}: strided {actual}, packed {expected}");
                }
        }
    }

    /// <summary>1-bit value tokens of random normal values, quantized, and softmax weights per head.</summary>
    static (byte[] Tokens, float[] P) OneBitValues(KiviFormat format, Random rng, int heads, int count)
    {
        var values = KiviTestData.Normals(rng, count, format.HeadDim);
        var tokens = new byte[format.ValueBytes(count)];
        for (int t = 0; t < count; t++)
            KiviQuantizer.QuantizeValueToken(format, values.AsSpan(t * format.HeadDim, format.HeadDim), tokens, t);
        var p = KiviTestData.Normals(rng, heads, count);
        for (int h = 0; h < heads; h++) System.Numerics.Tensors.TensorPrimitives.SoftMax(p.AsSpan(h * count, count), p.AsSpan(h * count, count));
        return (tokens, p);
    }

    [Theory]
    [InlineData(64, 64, 4, 64)]
    [InlineData(64, 64, 8, 200)]   // spans of 64, the last part-filled
    [InlineData(128, 32, 4, 150)]  // four value groups, each with its own unit
    [InlineData(48, 16, 8, 37)]    // groups of 16 channels, one part-filled span
    [InlineData(128, 128, 13, 70)] // a group of eight 16-channel chunks; eight heads, then four, then one in floats
    [InlineData(64, 64, 5, 1)]     // one token
    public void OneBitValueKernelMatchesItsSixBitReference(int headDim, int group, int heads, int count)
    {
        var format = new KiviFormat(headDim, group, 1);
        if (!KiviAttention.Runs(KiviKernel.Vector256, format)) return;
        var rng = new Random(headDim * 7 + heads + count);
        for (int seed = 0; seed < Seeds; seed++)
        {
            var values = KiviTestData.Normals(rng, count, headDim);
            var tokens = new byte[format.ValueBytes(count)];
            Array.Fill(tokens, (byte)0xFF); // empty lanes of a part-filled block hold junk (NaN scales) that must not count
            for (int t = 0; t < count; t++) KiviQuantizer.QuantizeValueToken(format, values.AsSpan(t * headDim, headDim), tokens, t);
            var p = KiviTestData.Normals(rng, heads, count);
            for (int i = 0; i < p.Length; i++) p[i] *= 1 + seed; // from flat weights to peaked ones
            for (int h = 0; h < heads; h++) System.Numerics.Tensors.TensorPrimitives.SoftMax(p.AsSpan(h * count, count), p.AsSpan(h * count, count));
            var start = KiviTestData.Normals(rng, heads, headDim);
            var reference = (float[])start.Clone();
            var kernel = (float[])start.Clone();
            KiviAttention.AccumulateValuesReference(KiviKernel.Vector256, format, p, count, count, tokens, reference);
            KiviAttention.AccumulateValues(format, p, count, count, tokens, kernel, KiviKernel.Vector256);
            for (int i = 0; i < kernel.Length; i++)
                if (!(MathF.Abs(kernel[i] - reference[i]) <= 1e-5f * (4 + MathF.Abs(reference[i]))))
                    Assert.Fail($"seed {seed}, head {i / headDim}, channel {i % headDim}: kernel {kernel[i]}, 6-bit reference {reference[i]}");
        }
    }

    [Theory]
    [InlineData(64, 64, 4, 64)]
    [InlineData(64, 64, 8, 200)]  // spans of 64, the last part-filled
    [InlineData(128, 32, 4, 150)] // four value groups, each with its own unit
    [InlineData(48, 16, 8, 37)]   // groups of 16 channels, one part-filled span
    public void SixBitValueSumsStayWithinHalfAUnitPerTokenOfTheExactSum(int headDim, int group, int heads, int count)
    {
        var format = new KiviFormat(headDim, group, 1);
        var rng = new Random(headDim + heads + count);
        double worst = 0;
        for (int seed = 0; seed < Seeds; seed++)
        {
            var (tokens, p) = OneBitValues(format, rng, heads, count);
            var exact = new float[heads * headDim];
            var rounded = new float[heads * headDim];
            KiviAttention.AccumulateValuesScalar(format, p, tokens, exact);
            KiviAttention.AccumulateValuesSixBitScalar(format, p, count, count, tokens, rounded);
            var rounding = FixedValueRounding(format, KiviKernel.Vector256, p, count, count, tokens, heads);
            for (int i = 0; i < exact.Length; i++)
            {
                double moved = Math.Abs(rounded[i] - exact[i]), bound = rounding[i / headDim] + 1e-5 * (4 + Math.Abs(exact[i]));
                if (!(moved <= bound)) Assert.Fail($"head {i / headDim} channel {i % headDim}: moved {moved} by the 6-bit weights, bound {bound}");
                worst = Math.Max(worst, moved / bound);
            }
        }
        // The rounding is real (sums do move) and the bound is not loose by orders of magnitude.
        Assert.InRange(worst, 0.01, 1.0);
    }

    [Fact]
    public void SixBitValueRoundingIsSmallBesideTheOneBitCodesOwnError()
    {
        // Weighted sums of the true float values, of their 1-bit codes (exact) and of the codes with 6-bit weights.
        var format = new KiviFormat(64, 64, 1);
        var rng = new Random(12);
        const int heads = 8, count = 1000;
        double codeError = 0, roundingError = 0;
        for (int rep = 0; rep < 5; rep++)
        {
            var values = KiviTestData.Normals(rng, count, 64);
            var tokens = new byte[format.ValueBytes(count)];
            for (int t = 0; t < count; t++) KiviQuantizer.QuantizeValueToken(format, values.AsSpan(t * 64, 64), tokens, t);
            // Peaked weights, as long-context attention gives: scores of spread 3.
            var p = KiviTestData.Normals(rng, heads, count);
            for (int i = 0; i < p.Length; i++) p[i] *= 3;
            for (int h = 0; h < heads; h++) System.Numerics.Tensors.TensorPrimitives.SoftMax(p.AsSpan(h * count, count), p.AsSpan(h * count, count));
            var exact = new float[heads * 64];
            var rounded = new float[heads * 64];
            KiviAttention.AccumulateValuesScalar(format, p, tokens, exact);
            KiviAttention.AccumulateValuesSixBitScalar(format, p, count, count, tokens, rounded);
            for (int h = 0; h < heads; h++)
                for (int c = 0; c < 64; c++)
                {
                    double truth = 0;
                    for (int t = 0; t < count; t++) truth += (double)p[h * count + t] * values[t * 64 + c];
                    codeError += Math.Pow(exact[h * 64 + c] - truth, 2);
                    roundingError += Math.Pow(rounded[h * 64 + c] - exact[h * 64 + c], 2);
                }
        }
        // Measured 0.072: the two together are within 0.3 % of the codes' error alone.
        double ratio = Math.Sqrt(roundingError / codeError);
        Assert.InRange(ratio, 0.01, 0.10);
    }

    [Fact]
    public void FixedPointValueSpansWithNegativeOrNaNWeightsSumInFloats()
    {
        var format = new KiviFormat(64, 64, 1);
        if (!KiviAttention.Runs(KiviKernel.Vector256, format)) return;
        var (tokens, p) = OneBitValues(format, new Random(8), 4, 64);
        // A negative weight in head 2 (no fixed-point unit takes it): the span sums in floats, as
        // one head alone does, for every head.
        p[2 * 64 + 5] = -0.25f;
        var together = new float[4 * 64];
        KiviAttention.AccumulateValues(format, p, 64, 64, tokens, together, KiviKernel.Vector256);
        for (int h = 0; h < 4; h++)
        {
            var alone = new float[64];
            KiviAttention.AccumulateValues(format, p.AsSpan(h * 64, 64), 64, 64, tokens, alone, KiviKernel.Vector256);
            for (int c = 0; c < 64; c++)
                if (!(MathF.Abs(together[h * 64 + c] - alone[c]) <= 1e-6f * (1 + MathF.Abs(alone[c]))))
                    Assert.Fail($"head {h} channel {c}: four heads {together[h * 64 + c]}, alone {alone[c]}");
        }
        // A NaN weight makes its head's sums NaN, and only its head's.
        p[2 * 64 + 5] = float.NaN;
        Array.Clear(together);
        KiviAttention.AccumulateValues(format, p, 64, 64, tokens, together, KiviKernel.Vector256);
        for (int i = 0; i < together.Length; i++) Assert.Equal(i / 64 == 2, float.IsNaN(together[i]));
    }

    [Theory]
    [InlineData(64, 64, 1, 4, 150)]
    [InlineData(128, 32, 2, 5, 33)]
    [InlineData(64, 32, 4, 8, 16)]
    [InlineData(64, 64, 1, 9, 40)]
    public void StridedAccumulateReadsOnlyEachRowsFirstTokens(int headDim, int group, int bits, int heads, int count)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(17 * heads + count);
        var values = KiviTestData.Normals(rng, count, headDim);
        var tokens = new byte[format.ValueBytes(count)];
        for (int t = 0; t < count; t++)
            KiviQuantizer.QuantizeValueToken(format, values.AsSpan(t * headDim, headDim), tokens, t);
        var p = KiviTestData.Normals(rng, heads, count);
        for (int h = 0; h < heads; h++) System.Numerics.Tensors.TensorPrimitives.SoftMax(p.AsSpan(h * count, count), p.AsSpan(h * count, count));
        var expected = new float[heads * headDim];
        KiviAttention.AccumulateValuesScalar(format, p, tokens, expected);
        // Each head's weights at the start of a longer row whose tail (the residual's weights, in a cache) is huge: it must not count.
        int stride = count + 21;
        var rows = new float[(heads - 1) * stride + count];
        Array.Fill(rows, 1e30f);
        for (int h = 0; h < heads; h++) p.AsSpan(h * count, count).CopyTo(rows.AsSpan(h * stride));
        foreach (var kernel in AllKernels(format))
        {
            var actual = new float[heads * headDim];
            KiviAttention.AccumulateValues(format, rows, count, stride, tokens, actual, kernel);
            var rounding = FixedValueRounding(format, kernel, rows, count, stride, tokens, heads);
            for (int i = 0; i < actual.Length; i++)
                if (!(MathF.Abs(actual[i] - expected[i]) <= 1e-5f * (4 + MathF.Abs(expected[i])) + rounding[i / headDim]))
                    Assert.Fail($"{kernel}: head {i / headDim}, channel {i % headDim}: strided {actual[i]}, packed {expected[i]}");
        }
    }

    [Fact]
    public void KernelsRejectMisshapenArguments()
    {
        var format = new KiviFormat(64, 32, 2);
        var group = new byte[format.KeyGroupBytes];
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[100], group, new float[64]));            // not whole heads
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[128], group, new float[63]));            // 2 heads x 32 scores
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[64], group[..^1], new float[32]));       // short group
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(default, new float[64], group, new float[32]));            // default format
        Assert.Throws<ArgumentOutOfRangeException>(() => KiviAttention.KeyScores(format, new float[128], group, new float[64], 31)); // rows overlap
        Assert.Throws<ArgumentException>(() => KiviAttention.KeyScores(format, new float[128], group, new float[71], 40));          // second row ends at 72
        var tokens = new byte[format.ValueBytes(16)];
        Assert.Throws<ArgumentException>(() => KiviAttention.AccumulateValues(format, new float[17], tokens, new float[64]));     // 17 tokens, one block stored
        Assert.Throws<ArgumentException>(() => KiviAttention.AccumulateValues(format, new float[3], tokens, new float[128]));     // 3 does not split in 2 heads
        Assert.Throws<ArgumentException>(() => KiviAttention.AccumulateValues(format, new float[3], tokens, new float[65]));      // not whole heads
        Assert.Throws<ArgumentOutOfRangeException>(() => KiviAttention.AccumulateValues(format, new float[32], 16, 15, tokens, new float[128])); // rows overlap
        Assert.Throws<ArgumentException>(() => KiviAttention.AccumulateValues(format, new float[35], 16, 20, tokens, new float[128]));          // second row ends at 36
        // Heads of 24 are no whole 512-bit vector: that kernel refuses them (and every kernel on a CPU without it).
        var narrow = new KiviFormat(24, 32, 2);
        Assert.Throws<PlatformNotSupportedException>(() => KiviAttention.KeyScores(narrow, new float[24], new byte[narrow.KeyGroupBytes], new float[32], 32, KiviKernel.Vector512));
        Assert.Throws<PlatformNotSupportedException>(() => KiviAttention.AccumulateValues(narrow, new float[1], 1, 1, new byte[narrow.ValueBytes(1)], new float[24], KiviKernel.Vector512));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void ConstantGroupsGiveFiniteExactResults(int bits)
    {
        // Scale 0 everywhere: scores are exactly q·z and the weighted sum exactly the constant.
        var format = new KiviFormat(64, 32, bits);
        var keys = new float[32 * 64];
        Array.Fill(keys, 0.5f);
        var packed = new byte[format.KeyGroupBytes];
        KiviQuantizer.QuantizeKeyGroup(format, keys, 64, packed);
        var q = new float[64];
        Array.Fill(q, 2f);
        var tokens = new byte[format.ValueBytes(4)];
        for (int t = 0; t < 4; t++) KiviQuantizer.QuantizeValueToken(format, keys.AsSpan(0, 64), tokens, t);
        foreach (var kernel in AllKernels(format))
        {
            var scores = new float[32];
            Scores(format, q, packed, scores, kernel);
            Assert.All(scores, s => Assert.Equal(64f, s));
            var output = new float[64];
            Accumulate(format, [0.25f, 0.25f, 0.25f, 0.25f], tokens, output, kernel);
            Assert.All(output, o => Assert.Equal(0.5f, o));
        }
    }
}
