namespace SpeCache.KvCache;

/// <summary>
/// The KV cache of one sequence, as the forward pass sees it: per layer, store the new tokens'
/// keys and values, then attend. Each policy (full, kivi, specache, eviction baselines) is one
/// implementation and decides what it keeps and in which tier; the model code is the same for all.
/// </summary>
/// <remarks>
/// Rows are laid out <c>[token][kvHead][headDim]</c> for K and V and <c>[token][head][headDim]</c>
/// for Q and the attention output. Keys arrive with RoPE already applied.
/// </remarks>
public interface IKvCache : IDisposable
{
    /// <summary>Tokens stored and committed (the position the next token gets).</summary>
    int Length { get; }

    /// <summary>Most tokens this cache can hold.</summary>
    int Capacity { get; }

    /// <summary>
    /// Stores <paramref name="count"/> new tokens' keys and values for <paramref name="layer"/>, at
    /// positions <c>Length .. Length + count - 1</c>.
    /// </summary>
    void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count);

    /// <summary>
    /// Causal attention of <paramref name="count"/> query rows, the i-th at position
    /// <c>Length + i</c>, over everything stored for <paramref name="layer"/> up to and including
    /// its own position. Called after <see cref="Append"/> for the same tokens.
    /// </summary>
    void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count);

    /// <summary>
    /// Makes the first <paramref name="count"/> tokens appended to every layer part of
    /// <see cref="Length"/>. Rows appended after them were speculative (see <see cref="BeginStep"/>)
    /// and are forgotten.
    /// </summary>
    void Commit(int count);

    /// <summary>
    /// Speculative rows this policy wants decoded beside the real token each decode step: 1 for
    /// specache (its row predicts the next step's top-k so the copy can start early), 0 otherwise.
    /// </summary>
    int SpeculativeRows => 0;

    /// <summary>
    /// Announces the rows of the next forward call: <paramref name="count"/> rows, of which the last
    /// <paramref name="speculative"/> are speculative. A speculative row attends causally like any
    /// other, no real row ever sees it, and its keys and values are never stored.
    /// </summary>
    void BeginStep(int count, int speculative)
    {
        if (speculative != 0)
            throw new NotSupportedException($"{GetType().Name} does not decode speculative rows");
    }

    /// <summary>Forgets every token (a new sequence reuses the memory).</summary>
    void Clear();

    /// <summary>Bytes this cache holds in each tier, for memory accounting and <c>--stats</c>.</summary>
    KvMemory Memory { get; }

    /// <summary>What this cache has done so far (bytes moved, prefetch hits, ...), or null if it counts nothing.</summary>
    KvCounters? Counters => null;
}

/// <summary>Bytes held per tier: the fast tier (read every step) and the host tier (big and slow).</summary>
public readonly record struct KvMemory(long FastTierBytes, long HostTierBytes);
