namespace SpeCache.Generation;

/// <summary>
/// Picks the next token from a row of logits. The steps run in llama.cpp's default order:
/// repetition penalty, top-k, top-p, min-p, temperature, then a weighted random draw (or the
/// argmax when the temperature is 0). As in llama.cpp, top-p and min-p judge the probabilities
/// before temperature is applied; temperature only reshapes the draw among the survivors.
/// <para>
/// One sampler per sequence: it owns its random state and its scratch buffers, which are allocated
/// once for the vocabulary size so that <see cref="Sample"/> allocates nothing per token.
/// </para>
/// </summary>
public sealed class Sampler
{
    readonly SamplingOptions _options;
    readonly int _vocabSize;
    readonly float[] _logits;    // penalised copy of the input row
    readonly bool[] _seen;       // marks tokens already penalised in this call (cleared after)
    readonly int[] _ids;         // candidate token ids, most likely first after selection
    readonly float[] _keys;      // sort keys (negated logits) matching _ids
    readonly float[] _probs;     // probabilities of the kept candidates
    readonly Xoshiro256 _rng;

    public Sampler(SamplingOptions options, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        _options = options;
        _vocabSize = vocabSize;
        _logits = new float[vocabSize];
        _seen = new bool[vocabSize];
        _ids = new int[vocabSize];
        _keys = new float[vocabSize];
        _probs = new float[vocabSize];
        Seed = options.Seed ?? (ulong)Random.Shared.NextInt64();
        _rng = new Xoshiro256(Seed);
    }

    /// <summary>The seed in use (the given one, or the random one chosen when none was given), to reproduce a run.</summary>
    public ulong Seed { get; }

    /// <summary>
    /// Chooses a token. <paramref name="recentTokens"/> is the sequence so far (prompt and output);
    /// the last <see cref="SamplingOptions.RepetitionLastN"/> of them are penalised.
    /// </summary>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> recentTokens)
    {
        if (logits.Length != _vocabSize)
            throw new ArgumentException($"expected {_vocabSize} logits, got {logits.Length}", nameof(logits));
        logits.CopyTo(_logits);
        ApplyRepetitionPenalty(recentTokens);

        if (_options.Temperature <= 0)
            return ArgMax(_logits);

        int n = SelectCandidates();
        n = ApplyTopP(n);
        n = ApplyMinP(n);
        return Draw(n);
    }

    void ApplyRepetitionPenalty(ReadOnlySpan<int> recent)
    {
        float penalty = _options.RepetitionPenalty;
        int lastN = _options.RepetitionLastN;
        if (penalty == 1 || lastN == 0)
            return;
        if (lastN > 0 && recent.Length > lastN)
            recent = recent[^lastN..];
        foreach (int t in recent)
        {
            if ((uint)t >= (uint)_vocabSize || _seen[t])
                continue;
            _seen[t] = true;
            // Dividing a negative logit would make it more likely; llama.cpp multiplies those instead.
            _logits[t] = _logits[t] > 0 ? _logits[t] / penalty : _logits[t] * penalty;
        }
        foreach (int t in recent)
            if ((uint)t < (uint)_vocabSize)
                _seen[t] = false;
    }

    static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best])
                best = i;
        return best;
    }

    /// <summary>
    /// Fills _ids with the candidates in descending logit order and returns how many: the top k,
    /// or all tokens when top-k is off. Top-k uses a size-k min-heap so a 128k vocabulary is not sorted
    /// whole for k = 40.
    /// </summary>
    int SelectCandidates()
    {
        int k = _options.TopK;
        if (k <= 0 || k >= _vocabSize)
        {
            for (int i = 0; i < _vocabSize; i++)
            {
                _ids[i] = i;
                _keys[i] = -_logits[i];
            }
            Array.Sort(_keys, _ids, 0, _vocabSize);
            return _vocabSize;
        }

        // Min-heap on logit in _ids[0..k): the root is the weakest of the best k seen so far.
        for (int i = 0; i < k; i++)
        {
            _ids[i] = i;
            SiftUp(i);
        }
        for (int i = k; i < _vocabSize; i++)
        {
            if (_logits[i] <= _logits[_ids[0]])
                continue;
            _ids[0] = i;
            SiftDown(0, k);
        }
        for (int i = 0; i < k; i++)
            _keys[i] = -_logits[_ids[i]];
        Array.Sort(_keys, _ids, 0, k);
        return k;
    }

    void SiftUp(int i)
    {
        while (i > 0)
        {
            int parent = (i - 1) / 2;
            if (_logits[_ids[i]] >= _logits[_ids[parent]])
                return;
            (_ids[i], _ids[parent]) = (_ids[parent], _ids[i]);
            i = parent;
        }
    }

    void SiftDown(int i, int count)
    {
        while (true)
        {
            int left = 2 * i + 1, smallest = i;
            if (left < count && _logits[_ids[left]] < _logits[_ids[smallest]])
                smallest = left;
            if (left + 1 < count && _logits[_ids[left + 1]] < _logits[_ids[smallest]])
                smallest = left + 1;
            if (smallest == i)
                return;
            (_ids[i], _ids[smallest]) = (_ids[smallest], _ids[i]);
            i = smallest;
        }
    }

    /// <summary>Softmax of the first n candidates (sorted, so the first is the maximum) at temperature t into _probs.</summary>
    void Softmax(int n, float temperature)
    {
        float max = _logits[_ids[0]];
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            float p = MathF.Exp((_logits[_ids[i]] - max) / temperature);
            _probs[i] = p;
            sum += p;
        }
        float inv = (float)(1 / sum);
        for (int i = 0; i < n; i++)
            _probs[i] *= inv;
    }

    /// <summary>Keeps the shortest prefix whose probability mass reaches top_p (at least one token).</summary>
    int ApplyTopP(int n)
    {
        float p = _options.TopP;
        if (p >= 1)
            return n;
        Softmax(n, 1);
        double cumulative = 0;
        for (int i = 0; i < n; i++)
        {
            cumulative += _probs[i];
            if (cumulative >= p)
                return i + 1;
        }
        return n;
    }

    /// <summary>Keeps tokens whose probability is at least min_p times the top one's (at least one token).</summary>
    int ApplyMinP(int n)
    {
        float minP = _options.MinP;
        if (minP <= 0)
            return n;
        // p_i >= min_p * p_max  is  logit_i >= logit_max + ln(min_p): no softmax needed.
        float threshold = _logits[_ids[0]] + MathF.Log(minP);
        int kept = 1;
        while (kept < n && _logits[_ids[kept]] >= threshold)
            kept++;
        return kept;
    }

    /// <summary>Temperature, renormalise over the survivors, and draw one.</summary>
    int Draw(int n)
    {
        Softmax(n, _options.Temperature);
        double u = _rng.NextDouble();
        double cumulative = 0;
        for (int i = 0; i < n; i++)
        {
            cumulative += _probs[i];
            if (u < cumulative)
                return _ids[i];
        }
        return _ids[n - 1]; // rounding left u just above the total
    }

    /// <summary>
    /// xoshiro256** (Blackman and Vigna), seeded through splitmix64. Our own generator rather than
    /// System.Random so that a seed gives the same tokens on every .NET version and platform.
    /// </summary>
    sealed class Xoshiro256
    {
        ulong _s0, _s1, _s2, _s3;

        public Xoshiro256(ulong seed)
        {
            _s0 = SplitMix(ref seed);
            _s1 = SplitMix(ref seed);
            _s2 = SplitMix(ref seed);
            _s3 = SplitMix(ref seed);
        }

        static ulong SplitMix(ref ulong x)
        {
            ulong z = x += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        ulong Next()
        {
            ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
            ulong t = _s1 << 17;
            _s2 ^= _s0;
            _s3 ^= _s1;
            _s1 ^= _s2;
            _s0 ^= _s3;
            _s2 ^= t;
            _s3 = ulong.RotateLeft(_s3, 45);
            return result;
        }

        /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
        public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
    }
}
