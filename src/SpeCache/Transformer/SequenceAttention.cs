using SpeCache.KvCache;
using SpeCache.Tensors;

namespace SpeCache.Transformer;

/// <summary>
/// The KV cache side of one forward call: per layer, each sequence stores its new rows' keys and
/// values in its own cache and attends over it. Several sequences (a batch) run in parallel, since
/// their caches share nothing; a lone sequence runs on the caller's thread, and its cache spreads
/// its own heads over threads where the policy does.
/// </summary>
internal sealed class SequenceAttention
{
    SequenceRows[] _sequences = [];
    int[] _firstRow = [];
    int _count;
    ForwardState? _state;
    int _qDim, _kvDim, _layer;
    bool _attend;
    readonly Action<int> _runSequence;
    readonly ParallelWorkers _parallel = new();

    public SequenceAttention() => _runSequence = RunSequence;

    /// <summary>Announces the call's rows to every cache (<see cref="IKvCache.BeginStep"/>).</summary>
    public void Begin(ReadOnlySpan<SequenceRows> sequences, ForwardState state, int qDim, int kvDim)
    {
        if (_sequences.Length < sequences.Length)
        {
            _sequences = new SequenceRows[sequences.Length];
            _firstRow = new int[sequences.Length];
        }
        int row = 0;
        for (int i = 0; i < sequences.Length; i++)
        {
            _sequences[i] = sequences[i];
            _firstRow[i] = row;
            row += sequences[i].Count;
        }
        _count = sequences.Length;
        _state = state;
        _qDim = qDim;
        _kvDim = kvDim;
        for (int i = 0; i < _count; i++)
            _sequences[i].Cache.BeginStep(_sequences[i].Count, _sequences[i].SpeculativeRows);
    }

    /// <summary>Appends the layer's keys and values of every sequence and, if <paramref name="attend"/>, attends.</summary>
    public void Run(int layer, bool attend)
    {
        _layer = layer;
        _attend = attend;
        if (_count == 1)
        {
            RunSequence(0);
            return;
        }
        _parallel.Run(_count, _runSequence);
    }

    /// <summary>Commits each sequence's real rows; its speculative rows are forgotten.</summary>
    public void End()
    {
        for (int i = 0; i < _count; i++)
        {
            _sequences[i].Cache.Commit(_sequences[i].Count - _sequences[i].SpeculativeRows);
            _sequences[i] = default; // hold no cache past the call, so a finished sequence's memory can go
        }
        _count = 0;
        _state = null;
    }

    void RunSequence(int index)
    {
        var (cache, count, _, _) = _sequences[index];
        var s = _state!;
        int row = _firstRow[index];
        cache.Append(_layer, s.K.AsSpan(row * _kvDim, count * _kvDim), s.V.AsSpan(row * _kvDim, count * _kvDim), count);
        if (_attend)
            cache.Attend(_layer, s.Q.AsSpan(row * _qDim, count * _qDim), s.Attention.AsSpan(row * _qDim, count * _qDim), count);
    }
}
