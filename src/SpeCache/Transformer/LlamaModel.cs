using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.Tensors;

namespace SpeCache.Transformer;

/// <summary>
/// Activation buffers for up to <see cref="MaxTokens"/> tokens per forward call, allocated once per
/// sequence and reused for every step, so decoding allocates nothing.
/// </summary>
public sealed class ForwardState
{
    public ForwardState(ModelConfig c, int maxTokens)
    {
        MaxTokens = maxTokens;
        X = new float[maxTokens * c.Dim];
        Xb = new float[maxTokens * c.Dim];
        Q = new float[maxTokens * c.QDim];
        K = new float[maxTokens * c.KvDim];
        V = new float[maxTokens * c.KvDim];
        Attention = new float[maxTokens * c.QDim];
        Gate = new float[maxTokens * c.HiddenDim];
        Up = new float[maxTokens * c.HiddenDim];
        Logits = new float[c.VocabSize];
    }

    public int MaxTokens { get; }
    public float[] X { get; }          // (tokens, dim) residual stream
    public float[] Xb { get; }         // (tokens, dim) normed input / projection output
    public float[] Q { get; }          // (tokens, heads * headDim)
    public float[] K { get; }          // (tokens, kvHeads * headDim)
    public float[] V { get; }          // (tokens, kvHeads * headDim)
    public float[] Attention { get; }  // (tokens, heads * headDim)
    public float[] Gate { get; }       // (tokens, hidden)
    public float[] Up { get; }         // (tokens, hidden)
    public float[] Logits { get; }     // (vocab) of the last token
    internal float[]? AllLogits;       // (tokens, vocab) when asked for every position
}

/// <summary>
/// The Llama-family forward pass (llama, mistral, qwen2, qwen3), read top to bottom like the paper:
/// embed, then per layer RMSNorm, Q/K/V, RoPE, attention through the KV cache, output projection,
/// residual, RMSNorm, SwiGLU FFN, residual; then the final norm and the classifier. The KV cache
/// policy and the compute backend are behind interfaces, so this code is the same for all of them.
/// </summary>
public sealed class LlamaModel
{
    readonly IComputeBackend _backend;
    readonly Rope _rope;

    public LlamaModel(ModelFile file, IComputeBackend backend)
    {
        Config = file.Config;
        Config.Validate();
        Weights = LlamaWeights.From(file);
        _backend = backend;
        _rope = new Rope(Config, Weights.RopeFreqFactors);
    }

    public ModelConfig Config { get; }
    public LlamaWeights Weights { get; }
    public IComputeBackend Backend => _backend;

    public ForwardState CreateState(int maxTokensPerCall = 64) => new(Config, maxTokensPerCall);

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions <c>cache.Length ...</c>, appends their K/V to the
    /// cache, and returns the logits of the last token (or, with <paramref name="allLogits"/>, of
    /// every token, row after row). Long inputs are processed in chunks of the state's size.
    /// The last <paramref name="speculativeRows"/> tokens are speculative: they see the real ones,
    /// no real token sees them, and the cache does not keep them (see <see cref="IKvCache.BeginStep"/>).
    /// </summary>
    public ReadOnlySpan<float> Forward(scoped ReadOnlySpan<int> tokens, IKvCache cache, ForwardState state, bool allLogits = false, int speculativeRows = 0)
    {
        if (tokens.IsEmpty) throw new ArgumentException("no tokens to run", nameof(tokens));
        if (speculativeRows < 0 || speculativeRows > tokens.Length || (speculativeRows > 0 && tokens.Length > state.MaxTokens))
            throw new ArgumentOutOfRangeException(nameof(speculativeRows), $"{speculativeRows} speculative rows do not fit a step of {tokens.Length} tokens");
        if (cache.Length + tokens.Length > cache.Capacity)
            throw new InvalidOperationException($"context overflow: {cache.Length} + {tokens.Length} tokens exceed the context of {cache.Capacity}");
        int vocab = Config.VocabSize;
        if (allLogits && (state.AllLogits == null || state.AllLogits.Length < tokens.Length * vocab))
            state.AllLogits = new float[tokens.Length * vocab];

        for (int start = 0; start < tokens.Length; start += state.MaxTokens)
        {
            int n = Math.Min(state.MaxTokens, tokens.Length - start);
            bool lastChunk = start + n == tokens.Length;
            // A chunk whose rows give no logits needs the last layer only for its keys and values.
            RunLayers(tokens.Slice(start, n), cache, state, speculativeRows, rowsNeeded: allLogits || lastChunk);
            if (allLogits)
                Classify(state, 0, n, state.AllLogits.AsSpan(start * vocab, n * vocab));
            else if (lastChunk)
                Classify(state, n - 1, 1, state.Logits);
        }
        return allLogits ? state.AllLogits.AsSpan(0, tokens.Length * vocab) : state.Logits;
    }

    void RunLayers(ReadOnlySpan<int> tokens, IKvCache cache, ForwardState s, int speculative, bool rowsNeeded)
    {
        var c = Config;
        int n = tokens.Length, dim = c.Dim, qDim = c.QDim, kvDim = c.KvDim, hidden = c.HiddenDim;
        var x = s.X.AsSpan(0, n * dim);
        var xb = s.Xb.AsSpan(0, n * dim);
        var q = s.Q.AsSpan(0, n * qDim);
        var k = s.K.AsSpan(0, n * kvDim);
        var v = s.V.AsSpan(0, n * kvDim);
        var att = s.Attention.AsSpan(0, n * qDim);
        var gate = s.Gate.AsSpan(0, n * hidden);
        var up = s.Up.AsSpan(0, n * hidden);

        for (int i = 0; i < n; i++)
        {
            if ((uint)tokens[i] >= (uint)c.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {tokens[i]} is outside the vocabulary of {c.VocabSize}");
            _backend.GetRow(Weights.TokenEmbedding, tokens[i], x.Slice(i * dim, dim));
        }

        cache.BeginStep(n, speculative);
        for (int l = 0; l < c.LayerCount; l++)
        {
            var w = Weights.Layers[l];

            // Attention: normed input -> Q, K, V (+ bias, + per-head norm) -> RoPE -> cache.
            _backend.RmsNorm(x, w.AttnNorm, xb, dim, c.RmsNormEps);
            _backend.MatMul(w.Wq, xb, q, n);
            _backend.MatMul(w.Wk, xb, k, n);
            _backend.MatMul(w.Wv, xb, v, n);
            for (int i = 0; i < n; i++)
            {
                var qi = q.Slice(i * qDim, qDim);
                var ki = k.Slice(i * kvDim, kvDim);
                if (w.Bq != null)
                {
                    _backend.Add(qi, w.Bq);
                    _backend.Add(ki, w.Bk!);
                    _backend.Add(v.Slice(i * kvDim, kvDim), w.Bv!);
                }
                if (w.QNorm != null)
                {
                    _backend.RmsNorm(qi, w.QNorm, qi, c.HeadDim, c.RmsNormEps);
                    _backend.RmsNorm(ki, w.KNorm!, ki, c.HeadDim, c.RmsNormEps);
                }
                int position = cache.Length + i;
                _rope.Apply(qi, c.HeadCount, position);
                _rope.Apply(ki, c.KvHeadCount, position);
            }
            cache.Append(l, k, v, n);
            if (!rowsNeeded && l == c.LayerCount - 1) break; // as llama.cpp does for rows without outputs
            cache.Attend(l, q, att, n);
            _backend.MatMul(w.Wo, att, xb, n);
            _backend.Add(x, xb);

            // Feed-forward: SwiGLU.
            _backend.RmsNorm(x, w.FfnNorm, xb, dim, c.RmsNormEps);
            _backend.MatMul(w.Gate, xb, gate, n);
            _backend.MatMul(w.Up, xb, up, n);
            _backend.SwiGlu(gate, up);
            _backend.MatMul(w.Down, gate, xb, n);
            _backend.Add(x, xb);
        }
        cache.Commit(n - speculative);
    }

    /// <summary>Final norm and classifier for rows <paramref name="first"/> .. first + count of the last chunk.</summary>
    void Classify(ForwardState s, int first, int count, Span<float> logits)
    {
        int dim = Config.Dim;
        var rows = s.X.AsSpan(first * dim, count * dim);
        var normed = s.Xb.AsSpan(0, count * dim);
        _backend.RmsNorm(rows, Weights.OutputNorm, normed, dim, Config.RmsNormEps);
        _backend.MatMul(Weights.Output, normed, logits, count);
    }
}
