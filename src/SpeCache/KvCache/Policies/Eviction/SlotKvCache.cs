using System.Numerics.Tensors;
using SpeCache.Quants;
using SpeCache.Transformer;

namespace SpeCache.KvCache.Policies.Eviction;

/// <summary>
/// What the eviction baselines (streaming, h2o) share: per layer and KV head, a fixed set of F16
/// slots. Slots <c>0 .. KeptSlots - 1</c> hold the tokens kept from earlier calls, in any order
/// (softmax does not care about order, and each key carries its position in its RoPE rotation);
/// slots <c>KeptSlots ..</c> stage the rows of the current call. A call's rows attend causally
/// over every kept token plus the call's rows up to their own, so a prompt longer than the kept
/// window is prefilled with full attention inside each chunk; the policy evicts only at
/// <see cref="Commit"/>, when it admits the staged rows into the kept slots.
/// </summary>
/// <remarks>
/// Keys stay rotated at their original positions: a kept token is never re-rotated to a compacted
/// position. StreamingLLM re-assigns positions inside the cache; we keep the model's positions so
/// that a window covering the whole context reproduces the full cache exactly.
/// </remarks>
public abstract class SlotKvCache : IKvCache
{
    protected readonly int Layers, KvHeads, HeadDim;
    readonly int _group;
    readonly Half[][] _keys;   // per layer: (kvHeads, SlotsPerHead, headDim)
    readonly Half[][] _values;
    readonly int[] _pending;   // per layer: rows staged by Append, not yet committed
    readonly float[] _keyRows, _valueRows, _scores; // attention scratch, not cache state
    readonly float _scale;

    /// <summary>Kept tokens in use per layer (the same count for every KV head of the layer).</summary>
    protected readonly int[] Kept;

    protected SlotKvCache(ModelConfig config, int capacity, int keptSlots, int stagingRows)
    {
        if (capacity <= 0 || capacity > config.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), $"context {capacity} must be between 1 and the model's {config.ContextLength}");
        Capacity = capacity;
        Layers = config.LayerCount;
        KvHeads = config.KvHeadCount;
        HeadDim = config.HeadDim;
        _group = config.QueryGroupSize;
        KeptSlots = keptSlots;
        StagingRows = stagingRows;
        SlotsPerHead = keptSlots + stagingRows;
        long perLayer = (long)KvHeads * SlotsPerHead * HeadDim;
        _keys = new Half[Layers][];
        _values = new Half[Layers][];
        for (int l = 0; l < Layers; l++)
        {
            _keys[l] = new Half[perLayer];
            _values[l] = new Half[perLayer];
        }
        _pending = new int[Layers];
        Kept = new int[Layers];
        _keyRows = new float[SlotsPerHead * HeadDim];
        _valueRows = new float[SlotsPerHead * HeadDim];
        _scores = new float[_group * SlotsPerHead];
        _scale = 1f / MathF.Sqrt(HeadDim);
    }

    /// <summary>Bytes one slot takes over all layers and KV heads: an F16 key and value.</summary>
    public static long SlotBytes(ModelConfig config) => SlotBytes(config.LayerCount, config.KvDim);

    /// <summary>Most tokens kept between calls (per layer and KV head).</summary>
    public int KeptSlots { get; }
    /// <summary>Most rows one Append may stage (the model prefills in chunks of at most this).</summary>
    public int StagingRows { get; }
    protected int SlotsPerHead { get; }

    public int Length { get; private set; }
    public int Capacity { get; }

    /// <summary>Kept tokens in use (after the last commit) in layer 0.</summary>
    public int KeptTokens => Kept[0];

    /// <summary>The F16 slots (kept and staging) plus whatever per-slot state the policy adds.</summary>
    public KvMemory Memory => new((long)SlotsPerHead * SlotBytes(Layers, KvHeads * HeadDim) + MetadataBytes, 0);

    static long SlotBytes(int layers, int kvDim) => 2L * layers * kvDim * sizeof(ushort);

    /// <summary>Fast-tier bytes of per-slot bookkeeping (h2o's scores and positions).</summary>
    protected virtual long MetadataBytes => 0;

    /// <summary>Called after Append staged <paramref name="count"/> rows of <paramref name="layer"/>.</summary>
    protected virtual void Staged(int layer, int count) { }

    /// <summary>
    /// The span (one float per slot) that Attend adds each query head's attention probabilities
    /// into for <paramref name="layer"/>, <paramref name="kvHead"/>; empty when the policy does not track them.
    /// </summary>
    protected virtual Span<float> Accumulator(int layer, int kvHead) => default;

    /// <summary>Moves the <paramref name="count"/> staged rows of <paramref name="layer"/> into kept slots, evicting as the policy says.</summary>
    protected abstract void Admit(int layer, int count);

    /// <summary>Called by Clear after the shared state is reset.</summary>
    protected virtual void Cleared() { }

    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count)
    {
        if (Length + count > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} + {count} tokens exceed its capacity of {Capacity}");
        if (count > StagingRows)
            throw new InvalidOperationException($"{count} rows in one call exceed the {StagingRows} staging rows of this {GetType().Name}");
        if (_pending[layer] != 0)
            throw new InvalidOperationException($"layer {layer} already has uncommitted tokens");
        int kvDim = KvHeads * HeadDim;
        for (int t = 0; t < count; t++)
            for (int h = 0; h < KvHeads; h++)
            {
                int at = SlotOffset(h, KeptSlots + t);
                TensorPrimitives.ConvertToHalf(keys.Slice(t * kvDim + h * HeadDim, HeadDim), _keys[layer].AsSpan(at, HeadDim));
                TensorPrimitives.ConvertToHalf(values.Slice(t * kvDim + h * HeadDim, HeadDim), _values[layer].AsSpan(at, HeadDim));
            }
        _pending[layer] = count;
        Staged(layer, count);
    }

    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count)
    {
        int qDim = KvHeads * _group * HeadDim;
        int kept = Kept[layer];
        int keptSpan = kept * HeadDim, stagedSpan = count * HeadDim;
        for (int g = 0; g < KvHeads; g++)
        {
            // Kept slots then staged rows, converted once per head into one contiguous run, so that
            // row i of this call sees the first kept + i + 1 rows of the run.
            int headBase = SlotOffset(g, 0), stagingBase = SlotOffset(g, KeptSlots);
            F16.ToSingle(_keys[layer].AsSpan(headBase, keptSpan), _keyRows);
            F16.ToSingle(_keys[layer].AsSpan(stagingBase, stagedSpan), _keyRows.AsSpan(keptSpan));
            F16.ToSingle(_values[layer].AsSpan(headBase, keptSpan), _valueRows);
            F16.ToSingle(_values[layer].AsSpan(stagingBase, stagedSpan), _valueRows.AsSpan(keptSpan));
            var accumulator = Accumulator(layer, g);

            for (int i = 0; i < count; i++)
            {
                int visible = kept + i + 1;
                for (int j = 0; j < _group; j++)
                {
                    int head = g * _group + j;
                    var q = queries.Slice(i * qDim + head * HeadDim, HeadDim);
                    var scores = _scores.AsSpan(j * SlotsPerHead, visible);
                    for (int t = 0; t < visible; t++)
                        scores[t] = AttentionMath.Dot(q, _keyRows.AsSpan(t * HeadDim, HeadDim)) * _scale;
                    AttentionMath.SoftMax(scores);

                    var o = output.Slice(i * qDim + head * HeadDim, HeadDim);
                    o.Clear();
                    for (int t = 0; t < visible; t++)
                    {
                        // Skipping weights this small changes no output bit and avoids subnormal products.
                        float p = scores[t];
                        if (p < AttentionMath.NegligibleWeight) continue;
                        AttentionMath.MultiplyAdd(_valueRows.AsSpan(t * HeadDim, HeadDim), p, o);
                    }
                    if (!accumulator.IsEmpty)
                    {
                        var keptScores = accumulator[..kept];
                        TensorPrimitives.Add(keptScores, scores[..kept], keptScores);
                        var stagedScores = accumulator.Slice(KeptSlots, i + 1);
                        TensorPrimitives.Add(stagedScores, scores[kept..], stagedScores);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Admits every layer's staged rows. These policies never decode speculative rows, so a commit
    /// of fewer rows than were appended is a caller error, not a rollback.
    /// </summary>
    public void Commit(int count)
    {
        for (int l = 0; l < Layers; l++)
            if (_pending[l] != count)
                throw new InvalidOperationException($"commit of {count} tokens, but layer {l} holds {_pending[l]} uncommitted");
        for (int l = 0; l < Layers; l++)
        {
            Admit(l, count);
            _pending[l] = 0;
        }
        Length += count;
    }

    public void Clear()
    {
        Length = 0;
        Array.Clear(_pending);
        Array.Clear(Kept);
        Cleared();
    }

    public void Dispose() { }

    protected int SlotOffset(int kvHead, int slot) => (kvHead * SlotsPerHead + slot) * HeadDim;

    /// <summary>Copies one KV head's key and value from slot <paramref name="from"/> to <paramref name="to"/>.</summary>
    protected void MoveSlot(int layer, int kvHead, int from, int to)
    {
        if (from == to) return;
        _keys[layer].AsSpan(SlotOffset(kvHead, from), HeadDim).CopyTo(_keys[layer].AsSpan(SlotOffset(kvHead, to), HeadDim));
        _values[layer].AsSpan(SlotOffset(kvHead, from), HeadDim).CopyTo(_values[layer].AsSpan(SlotOffset(kvHead, to), HeadDim));
    }
}
