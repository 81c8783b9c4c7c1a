using System.Numerics.Tensors;
using SpeCache.Quants;

namespace SpeCache.KvCache.Policies.Full;

/// <summary>Element type of the full-precision cache.</summary>
public enum FullKvElement
{
    /// <summary>16-bit floats, as llama.cpp's default f16 cache.</summary>
    F16,
    /// <summary>32-bit floats: exact, for comparisons with a reference (llama.cpp's f32 cache).</summary>
    F32,
}

/// <summary>
/// The baseline: every key and value kept in the fast tier at full precision (16-bit by default,
/// as llama.cpp's default f16 cache). Per layer, K and V are laid out [kvHead][position][headDim]
/// so that one head's keys are contiguous and attention streams through them.
/// </summary>
public sealed class FullKvCache : IKvCache
{
    readonly int _layers, _kvHeads, _headDim, _groupSize;
    readonly FullKvElement _element;
    readonly Half[][] _keys;   // per layer: (kvHeads, capacity, headDim), F16 cache
    readonly Half[][] _values; // per layer: (kvHeads, capacity, headDim), F16 cache
    readonly float[][] _keys32;   // the same, F32 cache
    readonly float[][] _values32;
    readonly float[] _valueRows; // (capacity, headDim) one head's values as floats
    readonly int[] _pending;   // tokens appended to each layer but not yet committed
    readonly float[] _scores;  // (groupSize, capacity)
    readonly float[] _keyRows; // (capacity, headDim) one head's keys as floats
    readonly float _scale;

    public FullKvCache(Transformer.ModelConfig config, int capacity, FullKvElement element = FullKvElement.F16)
    {
        if (capacity <= 0 || capacity > config.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), $"context {capacity} must be between 1 and the model's {config.ContextLength}");
        Capacity = capacity;
        _layers = config.LayerCount;
        _kvHeads = config.KvHeadCount;
        _headDim = config.HeadDim;
        _groupSize = config.QueryGroupSize;
        _element = element;
        long perLayer = (long)_kvHeads * capacity * _headDim;
        bool half = element == FullKvElement.F16;
        _keys = half ? Enumerable.Range(0, _layers).Select(_ => new Half[perLayer]).ToArray() : [];
        _values = half ? Enumerable.Range(0, _layers).Select(_ => new Half[perLayer]).ToArray() : [];
        _keys32 = half ? [] : Enumerable.Range(0, _layers).Select(_ => new float[perLayer]).ToArray();
        _values32 = half ? [] : Enumerable.Range(0, _layers).Select(_ => new float[perLayer]).ToArray();
        _valueRows = new float[capacity * _headDim];
        _pending = new int[_layers];
        _scores = new float[_groupSize * capacity];
        _keyRows = new float[capacity * _headDim];
        _scale = 1f / MathF.Sqrt(_headDim);
    }

    const float NegligibleWeight = 1e-30f;

    public int Length { get; private set; }
    public int Capacity { get; }

    public KvMemory Memory => new(2L * _layers * _kvHeads * Capacity * _headDim * (_element == FullKvElement.F16 ? sizeof(ushort) : sizeof(float)), 0);

    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count)
    {
        if (Length + count > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} + {count} tokens exceed its capacity of {Capacity}");
        if (_pending[layer] != 0)
            throw new InvalidOperationException($"layer {layer} already has uncommitted tokens");
        int kvDim = _kvHeads * _headDim;
        for (int t = 0; t < count; t++)
            for (int h = 0; h < _kvHeads; h++)
            {
                int at = (h * Capacity + Length + t) * _headDim;
                var k = keys.Slice(t * kvDim + h * _headDim, _headDim);
                var v = values.Slice(t * kvDim + h * _headDim, _headDim);
                if (_element == FullKvElement.F16)
                {
                    TensorPrimitives.ConvertToHalf(k, _keys[layer].AsSpan(at, _headDim));
                    TensorPrimitives.ConvertToHalf(v, _values[layer].AsSpan(at, _headDim));
                }
                else
                {
                    k.CopyTo(_keys32[layer].AsSpan(at, _headDim));
                    v.CopyTo(_values32[layer].AsSpan(at, _headDim));
                }
            }
        _pending[layer] = count;
    }

    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count)
    {
        int qDim = _kvHeads * _groupSize * _headDim;
        int visibleMax = Length + count;
        for (int g = 0; g < _kvHeads; g++)
        {
            int headBase = g * Capacity * _headDim;
            // Convert this head's keys and values once, in bulk (vectorized), for every query row and
            // query head of the group; a short row at a time would take .NET's scalar Half path.
            int span = visibleMax * _headDim;
            ReadOnlySpan<float> keyRows, valueRows;
            if (_element == FullKvElement.F16)
            {
                F16.ToSingle(_keys[layer].AsSpan(headBase, span), _keyRows.AsSpan(0, span));
                F16.ToSingle(_values[layer].AsSpan(headBase, span), _valueRows.AsSpan(0, span));
                keyRows = _keyRows.AsSpan(0, span);
                valueRows = _valueRows.AsSpan(0, span);
            }
            else
            {
                keyRows = _keys32[layer].AsSpan(headBase, span);
                valueRows = _values32[layer].AsSpan(headBase, span);
            }

            for (int i = 0; i < count; i++)
            {
                int visible = Length + i + 1; // causal: positions 0 .. Length + i
                for (int j = 0; j < _groupSize; j++)
                {
                    int head = g * _groupSize + j;
                    var q = queries.Slice(i * qDim + head * _headDim, _headDim);
                    var scores = _scores.AsSpan(j * Capacity, visible);
                    for (int t = 0; t < visible; t++)
                        scores[t] = Dot(q, keyRows.Slice(t * _headDim, _headDim)) * _scale;
                    SoftMax(scores);

                    var o = output.Slice(i * qDim + head * _headDim, _headDim);
                    o.Clear();
                    for (int t = 0; t < visible; t++)
                    {
                        // A weight this small changes no output bit (float keeps 24 bits of the
                        // sum), and multiplying by it makes subnormals, which cost x86 ~100 cycles each.
                        float p = scores[t];
                        if (p < NegligibleWeight) continue;
                        MultiplyAdd(valueRows.Slice(t * _headDim, _headDim), p, o);
                    }
                }
            }
        }
    }

    // Heads as narrow as the tiny models' (8 values) cost more in TensorPrimitives' call overhead
    // than in arithmetic; plain loops win below a couple of vectors.
    const int ShortRow = 32;

    /// <summary>In place. TensorPrimitives.SoftMax measured 4.6x slower than this on 200 values.</summary>
    static void SoftMax(Span<float> x)
    {
        float max = TensorPrimitives.Max(x);
        float sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float e = MathF.Exp(x[i] - max);
            x[i] = e;
            sum += e;
        }
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }

    static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length >= ShortRow) return TensorPrimitives.Dot(a, b);
        float sum = 0;
        for (int i = 0; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    static void MultiplyAdd(ReadOnlySpan<float> x, float scale, Span<float> accumulator)
    {
        if (x.Length >= ShortRow)
        {
            TensorPrimitives.MultiplyAdd(x, scale, accumulator, accumulator);
            return;
        }
        for (int i = 0; i < x.Length; i++) accumulator[i] += x[i] * scale;
    }

    public void Commit(int count)
    {
        for (int l = 0; l < _layers; l++)
        {
            if (_pending[l] != count)
                throw new InvalidOperationException($"commit of {count} tokens, but layer {l} holds {_pending[l]} uncommitted");
            _pending[l] = 0;
        }
        Length += count;
    }

    public void Clear()
    {
        Length = 0;
        Array.Clear(_pending);
    }

    public void Dispose() { }
}
