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
    internal readonly SequenceAttention SequenceAttention = new();
}

/// <summary>
/// One sequence's rows in a batched forward call: <paramref name="Count"/> consecutive rows whose
/// keys and values go to <paramref name="Cache"/>; the last <paramref name="SpeculativeRows"/> of them
/// are speculative (see <see cref="IKvCache.BeginStep"/>), and the last <paramref name="OutputRows"/>
/// give logits (a chunk in the middle of a prompt needs none).
/// </summary>
public readonly record struct SequenceRows(IKvCache Cache, int Count, int SpeculativeRows = 0, int OutputRows = 0);

/// <summary>
/// The Llama-family forward pass (llama, mistral, qwen2, qwen3), read top to bottom like the paper:
/// embed, then per layer RMSNorm, Q/K/V, RoPE, attention through the KV cache, output projection,
/// residual, RMSNorm, SwiGLU FFN, residual; then the final norm and the classifier. The KV cache
/// policy and the compute backend are behind interfaces, so this code is the same for all of them.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    readonly IComputeBackend _backend;
    readonly Rope _rope;
    readonly WeightArena? _arena;

    /// <param name="mapWeights">
    /// Read the weight matrices straight from the model file's memory map (nothing copied: opens at
    /// once, pages shared between processes) instead of from a copy in process memory, which decodes
    /// faster (see <see cref="WeightArena"/>).
    /// </param>
    public LlamaModel(ModelFile file, IComputeBackend backend, bool mapWeights = false)
    {
        Config = file.Config;
        Config.Validate();
        Weights = LlamaWeights.From(file);
        if (!mapWeights) Weights = Weights.CopiedToProcessMemory(out _arena);
        _backend = backend;
        _rope = new Rope(Config, Weights.RopeFreqFactors);
    }

    /// <summary>Bytes of weight matrices copied into process memory (0 when they are read from the map).</summary>
    public long ProcessMemoryWeightBytes => _arena?.Capacity ?? 0;

    /// <summary>Frees the copied weights; the model must not run afterwards.</summary>
    public void Dispose() => _arena?.Dispose();

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
        CheckRoom(cache, tokens.Length);
        int vocab = Config.VocabSize;
        if (allLogits) EnsureAllLogits(state, tokens.Length);

        for (int start = 0; start < tokens.Length; start += state.MaxTokens)
        {
            int n = Math.Min(state.MaxTokens, tokens.Length - start);
            bool lastChunk = start + n == tokens.Length;
            ReadOnlySpan<SequenceRows> sequence = [new(cache, n, speculativeRows)];
            // A chunk whose rows give no logits needs the last layer only for its keys and values.
            RunLayers(tokens.Slice(start, n), sequence, state, rowsNeeded: allLogits || lastChunk);
            if (allLogits)
                Classify(state, 0, n, state.AllLogits.AsSpan(start * vocab, n * vocab));
            else if (lastChunk)
                Classify(state, n - 1, 1, state.Logits);
        }
        return allLogits ? state.AllLogits.AsSpan(0, tokens.Length * vocab) : state.Logits;
    }

    /// <summary>
    /// One forward call for several sequences at once (batched decoding): <paramref name="tokens"/>
    /// holds each sequence's rows in the order of <paramref name="sequences"/>, each at the positions
    /// that follow its own cache. The weights are read once for all rows; each sequence attends only
    /// to its own cache. Returns the logits of each sequence's output rows, one row after another in
    /// the same order. The rows must fit one call (the state's <see cref="ForwardState.MaxTokens"/>).
    /// </summary>
    public ReadOnlySpan<float> ForwardBatch(ReadOnlySpan<int> tokens, ReadOnlySpan<SequenceRows> sequences, ForwardState state)
    {
        if (sequences.IsEmpty) throw new ArgumentException("no sequences to run", nameof(sequences));
        if (tokens.Length > state.MaxTokens)
            throw new ArgumentException($"{tokens.Length} rows do not fit a forward state of {state.MaxTokens}", nameof(tokens));
        int rows = 0, outputs = 0;
        foreach (var sequence in sequences)
        {
            if (sequence.Count < 1 || sequence.SpeculativeRows < 0 || sequence.SpeculativeRows > sequence.Count || sequence.OutputRows < 0 || sequence.OutputRows > sequence.Count)
                throw new ArgumentOutOfRangeException(nameof(sequences), $"a sequence of {sequence.Count} rows cannot have {sequence.SpeculativeRows} speculative and {sequence.OutputRows} output rows");
            CheckRoom(sequence.Cache, sequence.Count);
            rows += sequence.Count;
            outputs += sequence.OutputRows;
        }
        if (rows != tokens.Length) throw new ArgumentException($"the sequences have {rows} rows in all, the tokens {tokens.Length}", nameof(tokens));
        RunLayers(tokens, sequences, state, rowsNeeded: true);

        // Gather the output rows to the front of the residual stream, in order (each moves down or stays).
        int dim = Config.Dim, row = 0, packed = 0;
        foreach (var sequence in sequences)
        {
            row += sequence.Count;
            for (int r = row - sequence.OutputRows; r < row; r++, packed++)
                if (r != packed) state.X.AsSpan(r * dim, dim).CopyTo(state.X.AsSpan(packed * dim, dim));
        }
        if (outputs == 0) return [];
        EnsureAllLogits(state, outputs);
        var logits = state.AllLogits.AsSpan(0, outputs * Config.VocabSize);
        Classify(state, 0, outputs, logits);
        return logits;
    }

    static void CheckRoom(IKvCache cache, int tokens)
    {
        if (cache.Length + tokens > cache.Capacity)
            throw new InvalidOperationException($"context overflow: {cache.Length} + {tokens} tokens exceed the context of {cache.Capacity}");
    }

    void EnsureAllLogits(ForwardState state, int rows)
    {
        if (state.AllLogits == null || state.AllLogits.Length < rows * Config.VocabSize)
            state.AllLogits = new float[rows * Config.VocabSize];
    }

    void RunLayers(ReadOnlySpan<int> tokens, ReadOnlySpan<SequenceRows> sequences, ForwardState s, bool rowsNeeded)
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

        var attention = s.SequenceAttention;
        attention.Begin(sequences, s, qDim, kvDim, _backend.Threads);
        for (int l = 0; l < c.LayerCount; l++)
        {
            var w = Weights.Layers[l];

            // Attention: normed input -> Q, K, V (+ bias, + per-head norm) -> RoPE -> cache.
            _backend.RmsNorm(x, w.AttnNorm, xb, dim, c.RmsNormEps);
            _backend.MatMul(w.Wq, xb, q, n);
            _backend.MatMul(w.Wk, xb, k, n);
            _backend.MatMul(w.Wv, xb, v, n);
            int row = 0;
            foreach (var sequence in sequences)
            {
                for (int i = 0; i < sequence.Count; i++, row++)
                {
                    var qi = q.Slice(row * qDim, qDim);
                    var ki = k.Slice(row * kvDim, kvDim);
                    if (w.Bq != null)
                    {
                        _backend.Add(qi, w.Bq);
                        _backend.Add(ki, w.Bk!);
                        _backend.Add(v.Slice(row * kvDim, kvDim), w.Bv!);
                    }
                    if (w.QNorm != null)
                    {
                        _backend.RmsNorm(qi, w.QNorm, qi, c.HeadDim, c.RmsNormEps);
                        _backend.RmsNorm(ki, w.KNorm!, ki, c.HeadDim, c.RmsNormEps);
                    }
                    int position = sequence.Cache.Length + i;
                    _rope.Apply(qi, c.HeadCount, position);
                    _rope.Apply(ki, c.KvHeadCount, position);
                }
            }
            bool attend = rowsNeeded || l < c.LayerCount - 1; // as llama.cpp does for rows without outputs
            attention.Run(l, attend);
            if (!attend) break;
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
        attention.End();
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
