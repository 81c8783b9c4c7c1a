using System.Numerics.Tensors;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Generation;

/// <summary>
/// Runs decode steps, one real token each, the way the cache's policy wants them: plain, or (for
/// specache) with a speculative row beside the real token. The speculative token is the greedy
/// choice of the previous step's speculative row; the first one comes from a pre-decode step that
/// runs the real token alone as a speculative row (nothing stored). Near the end of the context,
/// where the extra row has no room, steps are plain.
/// </summary>
public sealed class DecodeStepper
{
    readonly LlamaModel _model;
    readonly IKvCache _cache;
    readonly ForwardState _state;
    readonly bool _speculate;
    int _guess = -1;      // the speculative token of the last step: a guess of the token that comes next
    int _nextGuess = -1;  // what the last speculative row predicted: the guess for the step after

    public DecodeStepper(LlamaModel model, IKvCache cache, ForwardState state)
    {
        if (state.MaxTokens < 2 && cache.SpeculativeRows > 0)
            throw new ArgumentException("a speculative step needs a forward state of at least 2 tokens", nameof(state));
        _model = model;
        _cache = cache;
        _state = state;
        _speculate = cache.SpeculativeRows == 1;
    }

    /// <summary>Records the token that followed the last step, to count how often the speculative guess was right.</summary>
    public void Observe(int token)
    {
        if (_guess < 0 || _cache.Counters is not { } counters) return;
        counters.SpeculativeGuesses++;
        if (token == _guess) counters.SpeculativeCorrect++;
    }

    /// <summary>Decodes <paramref name="token"/> at the next position and returns its logits (valid until the next call).</summary>
    public ReadOnlySpan<float> Step(int token)
    {
        if (!_speculate || _cache.Length + 2 > _cache.Capacity)
        {
            _guess = _nextGuess = -1;
            return _model.Forward([token], _cache, _state);
        }
        int vocab = _model.Config.VocabSize;
        if (_nextGuess < 0)
            _nextGuess = TensorPrimitives.IndexOfMax(_model.Forward([token], _cache, _state, speculativeRows: 1));
        var rows = _model.Forward([token, _nextGuess], _cache, _state, allLogits: true, speculativeRows: 1);
        _guess = _nextGuess;
        _nextGuess = TensorPrimitives.IndexOfMax(rows.Slice(vocab, vocab));
        return rows[..vocab];
    }
}
