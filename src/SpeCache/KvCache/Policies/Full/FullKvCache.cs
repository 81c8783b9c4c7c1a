using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SpeCache.Quants;
using SpeCache.Tensors;

namespace SpeCache.KvCache.Policies.Full;

/// <summary>Element type of the full cache, as llama.cpp's <c>--cache-type-k/-v</c>.</summary>
public enum FullKvElement
{
    /// <summary>16-bit floats, as llama.cpp's default f16 cache.</summary>
    F16,
    /// <summary>32-bit floats: exact, for comparisons with a reference (llama.cpp's f32 cache).</summary>
    F32,
    /// <summary>bfloat16: the top half of a float (8 exponent bits, 8 significant bits).</summary>
    BF16,
    /// <summary>ggml's Q8_0 blocks of 32 values: an F16 scale and 32 signed bytes (34 bytes).</summary>
    Q8_0,
    /// <summary>ggml's Q4_0 blocks of 32 values: an F16 scale and 16 bytes of nibbles (18 bytes).</summary>
    Q4_0,
}

/// <summary>
/// The baseline: every key and value kept in the fast tier, 16-bit by default (llama.cpp's default
/// f16 cache) or in another of llama.cpp's cache types. Per layer, K and V are kept head-major,
/// [kvHead][position][headDim], so that a decode step reads each head's positions as one stream:
/// one row per token of all heads ([position][kvHead * headDim], llama.cpp's layout) has a head
/// read 128 bytes of every 1 KB, which the hardware prefetcher does not follow; a 16K-token F16
/// step measured 116-135 ms that way (95 ms with software prefetch) and 42 ms head-major. Block types on heads
/// narrower than a block (the tiny models' heads of 8 and 16) keep whole rows, encoded as one: a
/// layout of <c>_units</c> encoding units per position, each unit's positions contiguous, covers
/// both (kvHeads units of one head, or one unit of all heads).
/// Long contexts spread the decoding over threads by positions and the attention by KV heads,
/// as KIVI and SpeCache do; every head is computed by the same code whatever thread runs it, so
/// the output does not depend on the thread count.
/// </summary>
public sealed unsafe class FullKvCache : IKvCache
{
    readonly int _layers, _kvHeads, _headDim, _groupSize, _kvDim, _rowBytes;
    readonly int _units, _unitDim, _unitBytes; // encoding units per position (kvHeads or 1), their values and bytes
    readonly FullKvElement _element;
    readonly byte[][] _keys;   // per layer: (units, capacity, unitBytes)
    readonly byte[][] _values;
    readonly float[] _keyRows;   // (units, capacity, unitDim) the visible keys decoded to floats
    readonly float[] _valueRows;
    readonly int[] _pending;   // tokens appended to each layer but not yet committed
    readonly float[][] _scores;  // per attention worker: (groupSize, capacity)
    readonly float[][] _scaledQueries; // per attention worker: (groupSize, headDim) one group's queries times 2^112, for keys read as halves in place
    readonly float[][] _tiles;   // per attention worker: (TilePositions, headDim) of one head's keys or values, decoded in a decode step
    readonly CausalAttention[] _causal; // per attention worker: longer calls' attention
    readonly int _headBytes;     // bytes of one head's slice of a row; 0 when a head is not a whole number of blocks
    readonly int _workers;
    readonly int _quadBits;      // the four-head kernels' vector width for this head size; 0: one head at a time
    bool _infinityOrNaN;         // an F16 cache holds an infinite or NaN half: tiles take the exact conversion that keeps them
    readonly IWorkerThreads _threads;
    readonly float _scale;

    /// <summary>
    /// Calls with at most this many query rows (decode, with or without a speculative row) decode the
    /// cache a tile at a time inside each head's attention instead of all of it up front.
    /// </summary>
    internal const int TiledFromRowsAtMost = 2;

    /// <summary>Positions per decoded tile: 64 positions of a 128-wide head are 32 KB of floats, which stay in L1/L2.</summary>
    const int TilePositions = 64;

    /// <summary>Contexts from this many positions (over all KV heads) on spread the work over threads; below it the hand-off costs more than it saves.</summary>
    internal const int ParallelFromPositions = 4096;

    /// <param name="threads">
    /// The threads attention spreads over (at most one per KV head): the engine's
    /// (<see cref="IComputeBackend.Threads"/>), or by default the .NET thread pool's, one per processor.
    /// </param>
    public FullKvCache(Transformer.ModelConfig config, int capacity, FullKvElement element = FullKvElement.F16, IWorkerThreads? threads = null)
    {
        if (capacity <= 0 || capacity > config.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), $"context {capacity} must be between 1 and the model's {config.ContextLength}");
        Capacity = capacity;
        _layers = config.LayerCount;
        _kvHeads = config.KvHeadCount;
        _headDim = config.HeadDim;
        _groupSize = config.QueryGroupSize;
        _kvDim = config.KvDim;
        _element = element;
        _rowBytes = RowBytes(element, _kvDim);
        _units = RowMismatch(element, _headDim) == null ? _kvHeads : 1;
        _unitDim = _kvDim / _units;
        _unitBytes = RowBytes(element, _unitDim);
        _keys = new byte[_layers][];
        _values = new byte[_layers][];
        for (int l = 0; l < _layers; l++)
        {
            _keys[l] = new byte[(long)capacity * _rowBytes];
            _values[l] = new byte[(long)capacity * _rowBytes];
        }
        // An F32 cache is read in place; the others decode into these.
        _keyRows = element == FullKvElement.F32 ? [] : new float[(long)capacity * _kvDim];
        _valueRows = element == FullKvElement.F32 ? [] : new float[(long)capacity * _kvDim];
        _pending = new int[_layers];
        _threads = threads ?? new ParallelWorkers();
        _workers = Math.Clamp(_threads.ThreadCount, 1, _kvHeads);
        _scores = new float[_workers][];
        for (int w = 0; w < _workers; w++) _scores[w] = new float[_groupSize * capacity];
        // A head decodes on its own when it is a unit (the F32 cache is read in place instead).
        _headBytes = element == FullKvElement.F32 || _units == 1 ? 0 : _unitBytes;
        _scaledQueries = new float[_workers][];
        for (int w = 0; w < _workers; w++) _scaledQueries[w] = new float[_groupSize * _headDim];
        _tiles = new float[_workers][];
        for (int w = 0; w < _workers; w++) _tiles[w] = _headBytes == 0 ? [] : new float[TilePositions * _headDim];
        _causal = new CausalAttention[_workers];
        for (int w = 0; w < _workers; w++) _causal[w] = new CausalAttention(_headDim, _groupSize);
        _scale = 1f / MathF.Sqrt(_headDim);
        _quadBits = AttentionQuads.VectorBits(_headDim);
    }

    /// <summary>Bytes of one token's keys (or values) for all KV heads of one layer.</summary>
    public static int RowBytes(FullKvElement element, int kvDim) => element switch
    {
        FullKvElement.F32 => kvDim * sizeof(float),
        FullKvElement.F16 or FullKvElement.BF16 => kvDim * sizeof(ushort),
        FullKvElement.Q8_0 => Blocks(element, kvDim) * Q8_0.BlockBytes,
        FullKvElement.Q4_0 => Blocks(element, kvDim) * Q4_0.BlockBytes,
        _ => throw new ArgumentOutOfRangeException(nameof(element), $"unknown KV element type {element}"),
    };

    static int Blocks(FullKvElement element, int kvDim) => RowMismatch(element, kvDim) is { } why
        ? throw new NotSupportedException(why) : kvDim / Q8_0.BlockSize;

    /// <summary>Why a cache of <paramref name="element"/> cannot hold KV rows of <paramref name="kvDim"/> values (block types need whole blocks), or null when it can.</summary>
    public static string? RowMismatch(FullKvElement element, int kvDim) =>
        element is FullKvElement.Q8_0 or FullKvElement.Q4_0 && kvDim % Q8_0.BlockSize != 0
            ? $"a {Name(element)} cache needs KV rows of a multiple of {Q8_0.BlockSize} values (this model's are {kvDim})"
            : null;

    /// <summary>The CLI's name of an element type, as llama.cpp spells it (f16, bf16, q8_0, q4_0, f32).</summary>
    public static string Name(FullKvElement element) => element.ToString().ToLowerInvariant();

    /// <summary>The element type named like llama.cpp's cache types, or an error listing them.</summary>
    public static FullKvElement Parse(string name)
    {
        foreach (var e in Enum.GetValues<FullKvElement>())
            if (string.Equals(Name(e), name, StringComparison.OrdinalIgnoreCase)) return e;
        throw new ArgumentException($"unknown KV cache type '{name}' (available: {string.Join(", ", Enum.GetValues<FullKvElement>().Select(Name))})");
    }

    /// <summary>Encodes rows of floats (a whole number of KV rows) into the element type.</summary>
    public static void Encode(FullKvElement element, ReadOnlySpan<float> source, Span<byte> destination)
    {
        switch (element)
        {
            case FullKvElement.F32: MemoryMarshal.AsBytes(source).CopyTo(destination); break;
            case FullKvElement.F16: F16.QuantizeRow(source, destination); break;
            case FullKvElement.BF16: BF16.QuantizeRow(source, destination); break;
            case FullKvElement.Q8_0: Q8_0.QuantizeRow(source, destination); break;
            case FullKvElement.Q4_0: Q4_0.QuantizeRow(source, destination); break;
            default: throw new ArgumentOutOfRangeException(nameof(element));
        }
    }

    /// <summary>Decodes encoded rows back to floats; <paramref name="destination"/>'s length says how many values.</summary>
    public static void Decode(FullKvElement element, ReadOnlySpan<byte> source, Span<float> destination)
    {
        switch (element)
        {
            case FullKvElement.F32: MemoryMarshal.Cast<byte, float>(source)[..destination.Length].CopyTo(destination); break;
            case FullKvElement.F16: F16.DequantizeRow(source, destination); break;
            case FullKvElement.BF16: BF16.DequantizeRow(source, destination); break;
            case FullKvElement.Q8_0: Q8_0.DequantizeRow(source, destination); break;
            case FullKvElement.Q4_0: Q4_0.DequantizeRow(source, destination); break;
            default: throw new ArgumentOutOfRangeException(nameof(element));
        }
    }

    public FullKvElement Element => _element;

    public int Length { get; private set; }
    public int Capacity { get; }

    public KvMemory Memory => new(FastTierBytes(_layers, Capacity, _rowBytes), 0);

    /// <summary>Fast-tier bytes of a cache of <paramref name="capacity"/> tokens: every layer's K and V rows.</summary>
    public static long FastTierBytes(Transformer.ModelConfig config, int capacity, FullKvElement element) =>
        FastTierBytes(config.LayerCount, capacity, RowBytes(element, config.KvDim));

    static long FastTierBytes(int layers, int capacity, int rowBytes) => 2L * layers * capacity * rowBytes;

    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count)
    {
        if (Length + count > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} + {count} tokens exceed its capacity of {Capacity}");
        if (_pending[layer] != 0)
            throw new InvalidOperationException($"layer {layer} already has uncommitted tokens");
        if (_units == 1)
        {
            // Rows are contiguous on both sides, so the whole call encodes at once.
            int at = Length * _rowBytes, bytes = count * _rowBytes, n = count * _kvDim;
            Encode(_element, keys[..n], _keys[layer].AsSpan(at, bytes));
            Encode(_element, values[..n], _values[layer].AsSpan(at, bytes));
        }
        else
        {
            for (int u = 0; u < _units; u++)
                for (int t = 0; t < count; t++)
                {
                    int from = t * _kvDim + u * _unitDim, at = (u * Capacity + Length + t) * _unitBytes;
                    Encode(_element, keys.Slice(from, _unitDim), _keys[layer].AsSpan(at, _unitBytes));
                    Encode(_element, values.Slice(from, _unitDim), _values[layer].AsSpan(at, _unitBytes));
                }
        }
        _pending[layer] = count;
        // Halves overflow to infinity past 65504; a model's activations rarely do, so the decode
        // step keeps the shorter conversion until one is stored (checked here once per token, not
        // per step over the whole context).
        if (_element == FullKvElement.F16 && !_infinityOrNaN)
            _infinityOrNaN = HasInfinityOrNaN(_keys[layer], count) || HasInfinityOrNaN(_values[layer], count);
    }

    /// <summary>Whether the <paramref name="count"/> positions just appended to a layer's keys or values hold an infinite or NaN half.</summary>
    bool HasInfinityOrNaN(byte[] encoded, int count)
    {
        var halves = MemoryMarshal.Cast<byte, ushort>(encoded.AsSpan());
        int perUnit = _unitBytes / sizeof(ushort);
        for (int u = 0; u < _units; u++)
            if (F16.AnyInfinityOrNaN(halves.Slice((u * Capacity + Length) * perUnit, count * perUnit))) return true;
        return false;
    }

    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count)
    {
        int visibleMax = Length + count;
        bool parallel = _workers > 1 && (long)visibleMax * _kvHeads >= ParallelFromPositions;
        // Spans cannot enter a lambda: the call's rows stay pinned for its duration and reach the
        // workers as pointers, its shape through fields, so each loop body is one delegate made once.
        fixed (float* q = queries)
        fixed (float* o = output)
        {
            (_callLayer, _callCount, _callRowsLength) = (layer, count, queries.Length);
            _callQueries = q;
            _callOutput = o;
            // A decode step decodes each head's rows a tile at a time as it attends (AttendHead).
            // Longer calls (prefill) decode every visible row once, in bulk, for all heads and
            // query rows, then attend a block of rows at a time (CausalAttention); rows decode
            // independently, so splitting them over threads changes no value.
            _callTiled = count <= TiledFromRowsAtMost && _headBytes > 0;
            if (_element != FullKvElement.F32 && !_callTiled)
            {
                if (parallel) _threads.Run(_workers, _decodeRowsOfWorker ??= DecodeRowsOfWorker);
                else DecodeRows(0, visibleMax);
            }
            if (parallel)
            {
                _threads.Run(_workers, _attendHeadsOfWorker ??= AttendHeadsOfWorker);
            }
            else
            {
                for (int g = 0; g < _kvHeads; g++) AttendHead(0, g);
            }
            _callQueries = _callOutput = null;
        }
    }

    int _callLayer, _callCount, _callRowsLength;
    bool _callTiled;
    float* _callQueries, _callOutput;
    Action<int>? _decodeRowsOfWorker, _attendHeadsOfWorker;

    void DecodeRowsOfWorker(int worker)
    {
        int visibleMax = Length + _callCount;
        int per = (visibleMax + _workers - 1) / _workers;
        int first = Math.Min(visibleMax, worker * per);
        DecodeRows(first, Math.Min(visibleMax, first + per));
    }

    /// <summary>Decodes positions [<paramref name="first"/>, <paramref name="end"/>) of the call's layer into the float rows.</summary>
    void DecodeRows(int first, int end)
    {
        int layer = _callLayer, n = end - first;
        for (int u = 0; u < _units; u++)
        {
            int from = (u * Capacity + first) * _unitBytes, to = (u * Capacity + first) * _unitDim;
            Decode(_element, _keys[layer].AsSpan(from, n * _unitBytes), _keyRows.AsSpan(to, n * _unitDim));
            Decode(_element, _values[layer].AsSpan(from, n * _unitBytes), _valueRows.AsSpan(to, n * _unitDim));
        }
    }

    void AttendHeadsOfWorker(int worker)
    {
        for (int g = worker; g < _kvHeads; g += _workers) AttendHead(worker, g);
    }

    /// <summary>All query rows of the call against KV head <paramref name="g"/>, with one worker's buffers.</summary>
    void AttendHead(int worker, int g)
    {
        if (_callTiled)
        {
            AttendHeadTiled(worker, g);
            return;
        }
        // The F32 cache is read in place, the others from the rows decoded up front.
        var keys = _element == FullKvElement.F32 ? MemoryMarshal.Cast<byte, float>(_keys[_callLayer].AsSpan()) : _keyRows;
        var values = _element == FullKvElement.F32 ? MemoryMarshal.Cast<byte, float>(_values[_callLayer].AsSpan()) : _valueRows;
        // Head g's first value: in unit g (head-major) or at g's place in the one unit (whole rows).
        int first = _units == 1 ? g * _headDim : g * Capacity * _headDim;
        int length = (Length + _callCount - 1) * _unitDim + _headDim, rowDim = _groupSize * _headDim;
        _causal[worker].Attend(keys.Slice(first, length), values.Slice(first, length), _unitDim, Length,
            new ReadOnlySpan<float>(_callQueries, _callRowsLength)[(g * rowDim)..],
            new Span<float>(_callOutput, _callRowsLength)[(g * rowDim)..], _kvHeads * rowDim, _callCount, _scale);
    }

    /// <summary>
    /// A decode step's (one or two rows) attention against KV head <paramref name="g"/>, a tile of
    /// positions at a time, each tile serving every query head of the group. Four heads at a time
    /// share each key and value (<see cref="AttentionQuads"/>): on an F16 cache they read the halves
    /// in place (<see cref="ScaledHalfElement"/>, the queries and weights scaled to match); on other
    /// types, on a cache holding an infinite or NaN half, and for the heads left over, the head's
    /// keys and values are decoded into the worker's tile first (<see cref="TileRows"/>). (A
    /// 32K-token F16 cache is 64 MB per layer; decoded up front it is written out as 128 MB of
    /// floats and read back from memory.)
    /// </summary>
    void AttendHeadTiled(int worker, int g)
    {
        var scoreBuffer = _scores[worker];
        var tile = _tiles[worker];
        int qDim = _kvHeads * _groupSize * _headDim, d = _headDim;
        int quads = _quadBits > 0 ? _groupSize / 4 * 4 : 0;
        bool halves = quads > 0 && _element == FullKvElement.F16 && !_infinityOrNaN;
        var queries = new ReadOnlySpan<float>(_callQueries, _callRowsLength);
        var output = new Span<float>(_callOutput, _callRowsLength);
        long headAt = (long)g * Capacity * _headBytes;
        fixed (float* scores0 = scoreBuffer)
        fixed (float* tile0 = tile)
        fixed (float* scaled0 = _scaledQueries[worker])
        fixed (byte* keys0 = _keys[_callLayer])
        fixed (byte* values0 = _values[_callLayer])
            for (int i = 0; i < _callCount; i++)
            {
                int visible = Length + i + 1; // causal: positions 0 .. Length + i
                int heads = i * qDim + g * _groupSize * d; // the group's first query head (and output) in this row
                // Queries of 2^16 and more (or NaN) cannot be scaled: the call decodes tiles instead.
                bool inPlace = halves && F16.ScaleActivations(queries.Slice(heads, quads * d), _scaledQueries[worker]);
                bool tiled = !inPlace || quads < _groupSize;
                for (int t0 = 0; t0 < visible; t0 += TilePositions)
                {
                    int n = Math.Min(TilePositions, visible - t0);
                    float* scores = scores0 + t0;
                    if (inPlace)
                        for (int j = 0; j < quads; j += 4)
                            AttentionQuads.Scores<ScaledHalfElement>(_quadBits, scaled0 + j * d, keys0 + headAt + (long)t0 * _headBytes, n, d, _scale, scores + j * Capacity, Capacity);
                    if (!tiled) continue;
                    var keys = TileRows(_keys[_callLayer], g, t0, n, tile);
                    for (int j = inPlace ? quads : 0; j < quads; j += 4)
                        AttentionQuads.Scores(_quadBits, _callQueries + heads + j * d, tile0, n, d, _scale, scores + j * Capacity, Capacity);
                    for (int j = quads; j < _groupSize; j++)
                    {
                        var q = queries.Slice(heads + j * d, d);
                        for (int t = 0; t < n; t++)
                            scores[j * Capacity + t] = AttentionMath.Dot(q, keys.Slice(t * d, d)) * _scale;
                    }
                }
                for (int j = 0; j < _groupSize; j++)
                {
                    // Weights for halves read in place are 2^112 times theirs (a power of two: the
                    // same bits scaled), and so is the weight below which they count as 0.
                    float factor = inPlace && j < quads ? QuantMath.HalfRebias : 1f;
                    var weights = scoreBuffer.AsSpan(j * Capacity, visible);
                    float sum = AttentionMath.ExpSum(weights, TensorPrimitives.Max(weights), weights);
                    TensorPrimitives.Multiply(weights, factor * (1f / sum), weights);
                    // The four-head kernel cannot skip negligible weights one head at a time.
                    AttentionMath.ZeroBelow(weights, AttentionMath.NegligibleWeight * factor);
                    output.Slice(heads + j * d, d).Clear();
                }
                for (int t0 = 0; t0 < visible; t0 += TilePositions)
                {
                    int n = Math.Min(TilePositions, visible - t0);
                    float* weights = scores0 + t0;
                    if (inPlace)
                        for (int j = 0; j < quads; j += 4)
                            AttentionQuads.AccumulateValues<ScaledHalfElement>(_quadBits, weights + j * Capacity, Capacity, values0 + headAt + (long)t0 * _headBytes, d, n, _callOutput + heads + j * d, d);
                    if (!tiled) continue;
                    var values = TileRows(_values[_callLayer], g, t0, n, tile);
                    for (int j = inPlace ? quads : 0; j < quads; j += 4)
                        AttentionQuads.AccumulateValues(_quadBits, weights + j * Capacity, Capacity, tile0, d, n, _callOutput + heads + j * d, d);
                    for (int j = quads; j < _groupSize; j++)
                    {
                        var o = output.Slice(heads + j * d, d);
                        for (int t = 0; t < n; t++)
                            if (weights[j * Capacity + t] != 0) AttentionMath.MultiplyAdd(values.Slice(t * d, d), weights[j * Capacity + t], o);
                    }
                }
            }
    }

    /// <summary>Head <paramref name="g"/>'s keys or values at positions <paramref name="t0"/> .. t0 + n, decoded into <paramref name="tile"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    ReadOnlySpan<float> TileRows(byte[] encoded, int g, int t0, int n, float[] tile)
    {
        // The head's positions t0 .. t0 + n are contiguous: one conversion.
        int at = (g * Capacity + t0) * _headBytes;
        if (_element == FullKvElement.F16)
        {
            // Inline: the same conversion as the general decoder, without its checks and casts.
            fixed (byte* source = encoded)
            fixed (float* destination = tile)
            {
                if (_infinityOrNaN) F16.ToSingle((ushort*)(source + at), destination, n * _headDim);
                else F16.FiniteToSingle((ushort*)(source + at), destination, n * _headDim);
            }
        }
        else
        {
            Decode(_element, encoded.AsSpan(at, n * _headBytes), tile.AsSpan(0, n * _headDim));
        }
        return tile.AsSpan(0, n * _headDim);
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
        _infinityOrNaN = false;
        Array.Clear(_pending);
    }

    public void Dispose() { }
}
