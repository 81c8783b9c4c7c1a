using SpeCache.KvCache.Quantization;

namespace SpeCache.Tests.KvCache.Quantization;

/// <summary>
/// Error bounds of KIVI quantization. For every width the bound is half a step of the group's grid:
/// 2 and 4 bits round to the nearest of 2^b evenly spaced levels from min to max, step
/// s = (max - min) / (2^b - 1), so |x - x̂| &lt;= s/2. 1 bit has levels at the quartiles min + Δ/4 and
/// min + 3Δ/4 (Δ = max - min, s = Δ/2) and splits at the midpoint: a value below it is at most Δ/4
/// from the lower level (the worst cases are min and the midpoint itself), one above is at most Δ/4
/// from the upper (midpoint and max), so |x - x̂| &lt;= Δ/4 = s/2 too, and no value is farther from its
/// level than from the other one. On top comes Half's rounding of zero and scale (see
/// <see cref="KiviTestData.HalfSlack"/>).
/// </summary>
public class KiviQuantizerTests
{
    public static TheoryData<int, int, int> Formats()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int headDim in new[] { 64, 128 })
            foreach (int group in new[] { 32, 64 })
                foreach (int bits in new[] { 1, 2, 4 })
                    data.Add(headDim, group, bits);
        // A 1-bit head whose codes do not fill whole 32-bit words per token (the last word half
        // padding): the score kernel's tables past the head see zero q∘s.
        data.Add(48, 16, 1);
        // Heads the vector kernels cannot take whole (llama2.c's small models): the scalar path.
        data.Add(8, 32, 1);
        data.Add(8, 64, 2);
        data.Add(24, 32, 4);
        return data;
    }

    const int Seeds = 20;

    static float HalfStep(float min, float max, int bits) => bits == 1 ? (max - min) / 4 : (max - min) / ((1 << bits) - 1) / 2;

    static float[] RoundTripKeys(KiviFormat format, float[] keys)
    {
        var group = new byte[format.KeyGroupBytes];
        KiviQuantizer.QuantizeKeyGroup(format, keys, format.HeadDim, group);
        var back = new float[keys.Length];
        KiviQuantizer.DequantizeKeyGroup(format, group, back);
        return back;
    }

    static float[] RoundTripValues(KiviFormat format, float[] rows)
    {
        int count = rows.Length / format.HeadDim;
        var tokens = new byte[format.ValueBytes(count)];
        var back = new float[rows.Length];
        for (int t = 0; t < count; t++)
        {
            KiviQuantizer.QuantizeValueToken(format, rows.AsSpan(t * format.HeadDim, format.HeadDim), tokens, t);
            KiviQuantizer.DequantizeValueToken(format, tokens, t, back.AsSpan(t * format.HeadDim, format.HeadDim));
        }
        return back;
    }

    /// <summary>Checks every element of one group (the given indices) against the bound, and for 1 bit the nearer-level rule.</summary>
    static void AssertGroupWithinBound(float[] x, float[] back, IReadOnlyList<int> indices, int bits)
    {
        float min = float.MaxValue, max = float.MinValue;
        foreach (int i in indices) { min = MathF.Min(min, x[i]); max = MathF.Max(max, x[i]); }
        float bound = HalfStep(min, max, bits) + KiviTestData.HalfSlack(min, max);
        float lower = min + (max - min) / 4, upper = min + 3 * (max - min) / 4;
        foreach (int i in indices)
        {
            float error = MathF.Abs(x[i] - back[i]);
            if (!(error <= bound)) Assert.Fail($"|{x[i]} - {back[i]}| = {error} > {bound} in a group [{min}, {max}] at {bits} bits");
            if (!float.IsFinite(back[i])) Assert.Fail($"{x[i]} came back as {back[i]}");
            if (bits == 1)
            {
                float other = MathF.Abs(back[i] - lower) < MathF.Abs(back[i] - upper) ? upper : lower;
                if (!(error <= MathF.Abs(x[i] - other) + KiviTestData.HalfSlack(min, max))) Assert.Fail($"{x[i]} went to {back[i]}, farther than the other level {other}");
            }
        }
    }

    static int[] KeyChannel(int headDim, int group, int c) => Enumerable.Range(0, group).Select(t => t * headDim + c).ToArray();

    [Theory]
    [MemberData(nameof(Formats))]
    public void KeysAreWithinHalfAStepOfTheirChannelGroup(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        for (int seed = 0; seed < Seeds; seed++)
        {
            var rng = new Random(seed);
            var keys = seed % 2 == 0 ? KiviTestData.Normals(rng, group, headDim) : KiviTestData.WithOutlierChannels(rng, group, headDim);
            var back = RoundTripKeys(format, keys);
            for (int c = 0; c < headDim; c++)
                AssertGroupWithinBound(keys, back, KeyChannel(headDim, group, c), bits);
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void ValuesAreWithinHalfAStepOfTheirTokenGroup(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        for (int seed = 0; seed < Seeds; seed++)
        {
            var rng = new Random(1000 + seed);
            var values = KiviTestData.Normals(rng, 8, headDim);
            var back = RoundTripValues(format, values);
            for (int t = 0; t < 8; t++)
                for (int g = 0; g < headDim / format.ValueGroupSize; g++)
                    AssertGroupWithinBound(values, back, Enumerable.Range(t * headDim + g * format.ValueGroupSize, format.ValueGroupSize).ToArray(), bits);
        }
    }

    /// <summary>
    /// Per-channel key groups confine an outlier channel's range to that channel: the other channels
    /// keep errors bounded by their own small ranges. Quantizing the same keys per token (as values
    /// are) lets each outlier stretch the grid of its whole group, which this test shows is far worse.
    /// </summary>
    [Theory]
    [MemberData(nameof(Formats))]
    public void OutlierChannelsDoNotSpoilTheOtherChannels(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        var outliers = KiviTestData.OutlierChannels(headDim);
        double perChannelError = 0, perTokenError = 0;
        int counted = 0;
        for (int seed = 0; seed < Seeds; seed++)
        {
            var rng = new Random(2000 + seed);
            var keys = KiviTestData.WithOutlierChannels(rng, group, headDim);
            var back = RoundTripKeys(format, keys);
            var perToken = RoundTripValues(format, keys);
            // The largest range among ordinary channels bounds every ordinary channel's error.
            float widest = 0;
            for (int c = 0; c < headDim; c++)
            {
                if (outliers.Contains(c)) continue;
                var column = KeyChannel(headDim, group, c).Select(i => keys[i]).ToArray();
                widest = MathF.Max(widest, column.Max() - column.Min());
            }
            float bound = HalfStep(0, widest, bits) + KiviTestData.HalfSlack(-widest, widest);
            for (int c = 0; c < headDim; c++)
            {
                if (outliers.Contains(c)) continue;
                foreach (int i in KeyChannel(headDim, group, c))
                {
                    if (!(MathF.Abs(keys[i] - back[i]) <= bound)) Assert.Fail($"channel {c}: error {MathF.Abs(keys[i] - back[i])} > {bound}");
                    perChannelError += MathF.Abs(keys[i] - back[i]);
                    perTokenError += MathF.Abs(keys[i] - perToken[i]);
                    counted++;
                }
            }
        }
        perChannelError /= counted;
        perTokenError /= counted;
        Assert.True(perTokenError > 3 * perChannelError,
            $"mean error of ordinary channels: per channel {perChannelError:G3}, per token {perTokenError:G3}");
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void ConstantGroupsRoundTripExactly(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        float[] constants = [0f, 1.5f, -3.25f, 1000f, 6.1035156e-05f];
        var rng = new Random(7);
        var keys = KiviTestData.Normals(rng, group, headDim);
        // Every other channel constant over the group; the rest stay random.
        for (int c = 0; c < headDim; c += 2)
            for (int t = 0; t < group; t++) keys[t * headDim + c] = constants[c / 2 % constants.Length];
        var back = RoundTripKeys(format, keys);
        for (int c = 0; c < headDim; c += 2)
            foreach (int i in KeyChannel(headDim, group, c)) Assert.Equal(keys[i], back[i]);

        var values = new float[headDim];
        for (int c = 0; c < headDim; c++) values[c] = constants[c / format.ValueGroupSize % constants.Length];
        Assert.Equal(values, RoundTripValues(format, values));

        // A constant Half cannot represent comes back Half-rounded, and still finite.
        Array.Fill(values, 0.1f);
        Assert.All(RoundTripValues(format, values), v => Assert.Equal((float)(Half)0.1f, v));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void ExtremesMapToTheEndLevels(int bits)
    {
        // min and max go to the lowest and highest level; with a Half-representable scale those are
        // min and max themselves for 2 and 4 bits, and the quartiles for 1 bit.
        var format = new KiviFormat(16, 16, bits);
        float max = bits == 1 ? 6f : -2f + ((1 << bits) - 1); // scale 4 for 1 bit, 1 otherwise
        var values = new float[16];
        for (int c = 0; c < 16; c++) values[c] = c % 2 == 0 ? -2f : max;
        var back = RoundTripValues(format, values);
        float low = bits == 1 ? 0f : -2f, high = bits == 1 ? 4f : max; // 1 bit: quartiles of [-2, 6]
        for (int c = 0; c < 16; c++) Assert.Equal(c % 2 == 0 ? low : high, back[c]);
    }
}
