using SpeCache.KvCache;
using SpeCache.Tensors;

namespace SpeCache.Transformer;

/// <summary>
/// The KV cache side of one forward call: per layer, each sequence stores its new rows' keys and
/// values in its own cache and attends over it. A batch whose work the threads can share out by
/// whole sequences spreads them over the backend's threads, since their caches share nothing (a
/// cache's own split of its heads then runs on the thread its sequence got). Otherwise (a lone
/// sequence, fewer sequences than threads, or one that outweighs a thread's share, as a prompt
/// chunk joining decode steps does) they run one after another on the caller's thread, each cache
/// spreading its heads over the threads where the policy does.
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
    IWorkerThreads? _spreadOver; // the threads the call's sequences spread over; null: one after another

    public SequenceAttention() => _runSequence = RunSequence;

    /// <summary>Announces the call's rows to every cache (<see cref="IKvCache.BeginStep"/>); a batch spreads over <paramref name="threads"/>.</summary>
    public void Begin(ReadOnlySpan<SequenceRows> sequences, ForwardState state, int qDim, int kvDim, IWorkerThreads threads)
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
        // Decided once per call: the caches' lengths and the rows do not change until End commits.
        _spreadOver = SequencesShareOut(sequences, threads.ThreadCount) ? threads : null;
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
        if (_spreadOver != null)
        {
            _spreadOver.Run(_count, _runSequence);
            return;
        }
        for (int i = 0; i < _count; i++) RunSequence(i);
    }

    /// <summary>
    /// Whether there are threads to spread over and no sequence's attention outweighs a thread's
    /// share of the batch's, each weighed as its rows times the positions they see, so whole
    /// sequences keep every thread busy.
    /// </summary>
    internal static bool SequencesShareOut(ReadOnlySpan<SequenceRows> sequences, int threads)
    {
        if (threads < 2 || sequences.Length < threads) return false;
        long total = 0, heaviest = 0;
        foreach (var (cache, count, _, _) in sequences)
        {
            long work = (long)count * (cache.Length + count);
            total += work;
            heaviest = Math.Max(heaviest, work);
        }
        return heaviest * threads <= total;
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
        _spreadOver = null;
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
