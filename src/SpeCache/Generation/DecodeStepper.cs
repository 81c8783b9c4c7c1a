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
/// <para>
/// A step is <see cref="PrepareRows"/> (the rows to run), a forward call over them (alone, or
/// batched with other sequences' rows), then <see cref="Accept"/> (the real row's logits);
/// <see cref="Step"/> does all three for a sequence on its own.
/// </para>
/// </summary>
public sealed class DecodeStepper
{
    /// <summary>Most rows one step of one sequence runs.</summary>
    public const int MaxRows = 2;

    readonly LlamaModel _model;
    readonly IKvCache _cache;
    readonly ForwardState _state;
    readonly bool _speculate;
    int _guess = -1;      // the speculative token of the last step: a guess of the token that comes next
    int _nextGuess = -1;  // what the last speculative row predicted: the guess for the step after
    int _preparedRows;

    /// <param name="state">Where pre-decode steps run (and <see cref="Step"/>'s forward calls).</param>
    public DecodeStepper(LlamaModel model, IKvCache cache, ForwardState state)
    {
        if (state.MaxTokens < MaxRows && cache.SpeculativeRows > 0)
            throw new ArgumentException("a speculative step needs a forward state of at least 2 tokens", nameof(state));
        _model = model;
        _cache = cache;
        _state = state;
        _speculate = cache.SpeculativeRows == 1;
    }

    public IKvCache Cache => _cache;

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
        Span<int> rows = stackalloc int[MaxRows];
        var step = PrepareRows(token, rows);
        var logits = step.SpeculativeRows == 0
            ? _model.Forward(rows[..step.Count], _cache, _state)
            : _model.Forward(rows[..step.Count], _cache, _state, allLogits: true, speculativeRows: step.SpeculativeRows);
        return Accept(logits);
    }

    /// <summary>
    /// Writes the rows of the step that decodes <paramref name="token"/> into <paramref name="rows"/>
    /// (at least <see cref="MaxRows"/> long) and says how many there are and how many are speculative.
    /// May run the pre-decode step first, on this stepper's forward state.
    /// </summary>
    public SequenceRows PrepareRows(int token, Span<int> rows)
    {
        rows[0] = token;
        if (!_speculate || _cache.Length + 2 > _cache.Capacity)
        {
            _guess = _nextGuess = -1;
            _preparedRows = 1;
            return new SequenceRows(_cache, 1, OutputRows: 1);
        }
        if (_nextGuess < 0)
            _nextGuess = TensorPrimitives.IndexOfMax(_model.Forward([token], _cache, _state, speculativeRows: 1));
        rows[1] = _nextGuess;
        _preparedRows = 2;
        return new SequenceRows(_cache, 2, SpeculativeRows: 1, OutputRows: 2);
    }

    /// <summary>
    /// Takes the logits of the rows <see cref="PrepareRows"/> gave, row after row, and returns the
    /// real token's (a slice of them).
    /// </summary>
    public ReadOnlySpan<float> Accept(ReadOnlySpan<float> rowLogits)
    {
        int vocab = _model.Config.VocabSize;
        if (rowLogits.Length != _preparedRows * vocab)
            throw new ArgumentException($"expected the logits of {_preparedRows} rows", nameof(rowLogits));
        if (_preparedRows == 2)
        {
            _guess = _nextGuess;
            _nextGuess = TensorPrimitives.IndexOfMax(rowLogits.Slice(vocab, vocab));
        }
        _preparedRows = 0;
        return rowLogits[..vocab];
    }
}
