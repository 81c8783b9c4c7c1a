namespace SpeCache.Transformer;

/// <summary>
/// Rotary position embedding. Frequencies are computed once per model (in double, so long
/// contexts do not drift); each call rotates every head of a row in place.
/// </summary>
public sealed class Rope
{
    readonly double[] _inverseFrequencies; // (ropeDim / 2)
    readonly int _headDim;
    readonly RopeLayout _layout;

    public Rope(ModelConfig config, float[]? freqFactors)
    {
        _headDim = config.HeadDim;
        _layout = config.RopeLayout;
        int pairs = config.RopeDim / 2;
        _inverseFrequencies = new double[pairs];
        for (int i = 0; i < pairs; i++)
        {
            double inv = Math.Pow(config.RopeTheta, -2.0 * i / config.RopeDim);
            if (freqFactors != null) inv /= freqFactors[i];
            else if (config.RopeScaling is { } s) inv = Llama3Scale(inv, s);
            _inverseFrequencies[i] = inv;
        }
    }

    /// <summary>Llama 3.x: slow down low frequencies by the factor, keep high ones, blend in between.</summary>
    static double Llama3Scale(double inv, Llama3RopeScaling s)
    {
        double lowFreqWavelen = s.OriginalContextLength / s.LowFreqFactor;
        double highFreqWavelen = s.OriginalContextLength / s.HighFreqFactor;
        double wavelen = 2 * Math.PI / inv;
        if (wavelen < highFreqWavelen) return inv;
        if (wavelen > lowFreqWavelen) return inv / s.Factor;
        double smooth = (s.OriginalContextLength / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        return (1 - smooth) * inv / s.Factor + smooth * inv;
    }

    /// <summary>Rotates the <paramref name="heads"/> heads laid out one after another in <paramref name="row"/>.</summary>
    public void Apply(Span<float> row, int heads, int position)
    {
        int pairs = _inverseFrequencies.Length;
        Span<float> cos = stackalloc float[pairs];
        Span<float> sin = stackalloc float[pairs];
        for (int i = 0; i < pairs; i++)
        {
            double angle = position * _inverseFrequencies[i];
            cos[i] = (float)Math.Cos(angle);
            sin[i] = (float)Math.Sin(angle);
        }
        for (int h = 0; h < heads; h++)
        {
            var head = row.Slice(h * _headDim, _headDim);
            // Interleaved rotates (2i, 2i+1); NeoX rotates (i, i + ropeDim/2).
            int stride = _layout == RopeLayout.Interleaved ? 1 : pairs;
            for (int i = 0; i < pairs; i++)
            {
                int a = _layout == RopeLayout.Interleaved ? 2 * i : i;
                float x0 = head[a], x1 = head[a + stride];
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[a + stride] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}
