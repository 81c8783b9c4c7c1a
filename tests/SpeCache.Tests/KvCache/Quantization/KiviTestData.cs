namespace SpeCache.Tests.KvCache.Quantization;

/// <summary>Seeded random data shaped like attention keys and values.</summary>
static class KiviTestData
{
    public static float Normal(Random rng) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));

    /// <summary>rows × cols standard normal floats.</summary>
    public static float[] Normals(Random rng, int rows, int cols)
    {
        var x = new float[rows * cols];
        for (int i = 0; i < x.Length; i++) x[i] = Normal(rng);
        return x;
    }

    /// <summary>Channels that carry outliers in <see cref="WithOutlierChannels"/>: one in each 32-channel group of a head of 64 or 128 (one in a smaller head).</summary>
    public static int[] OutlierChannels(int headDim) => headDim switch
    {
        < 64 => [3],
        < 128 => [3, 40],
        _ => [3, 40, 77, 100],
    };

    /// <summary>
    /// tokens × headDim keys, standard normal except a few channels 10-50x larger with an offset, as
    /// real keys have (KIVI's motivation for quantizing keys per channel).
    /// </summary>
    public static float[] WithOutlierChannels(Random rng, int tokens, int headDim)
    {
        var x = Normals(rng, tokens, headDim);
        foreach (int c in OutlierChannels(headDim))
        {
            float gain = 10 + 40 * (float)rng.NextDouble();
            float offset = gain * (rng.Next(2) == 0 ? -1 : 1);
            for (int t = 0; t < tokens; t++) x[t * headDim + c] = x[t * headDim + c] * gain + offset;
        }
        return x;
    }

    /// <summary>Slack for Half's rounding of a group's zero and scale (11 significant bits) plus float rounding.</summary>
    public static float HalfSlack(float min, float max) => (MathF.Abs(min) + MathF.Abs(max)) * (1f / 1024) + 1e-6f;
}
