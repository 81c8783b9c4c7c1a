using SpeCache.Transformer;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The KIVI low-bit copy of a sequence's keys and values, per layer and KV head, with its
/// full-precision residual window: tokens enter the residual; when it reaches R + G tokens its
/// oldest G are quantized together (keys per channel over the G tokens, values per token) and leave
/// it, so the residual keeps between R and R + G - 1 of the newest tokens. The kivi and specache
/// policies both keep one; memory is exact (<see cref="Bytes"/>), allocated once for the capacity.
/// </summary>
/// <remarks>The residual is F32: it is small (R + G tokens per head) and attention reads it exactly.</remarks>
public sealed class LowBitCopy
{
    readonly int _kvHeads, _headDim;

    public LowBitCopy(ModelConfig config, int capacity, int bits, int groupSize, int residualLength)
    {
        if (config.HeadDim % KiviFormat.HeadDimMultiple != 0)
            throw new NotSupportedException($"a low-bit KV copy needs a head size that is a multiple of {KiviFormat.HeadDimMultiple} (this model's is {config.HeadDim})");
        Format = new KiviFormat(config.HeadDim, groupSize, bits);
        _kvHeads = config.KvHeadCount;
        _headDim = config.HeadDim;
        ResidualMax = residualLength + groupSize;
        MaxGroups = capacity / groupSize + 1;
        int slots = config.LayerCount * _kvHeads;
        KeyGroups = new byte[slots][];
        Values = new byte[slots][];
        ResidualK = new float[slots][];
        ResidualV = new float[slots][];
        for (int s = 0; s < slots; s++)
        {
            KeyGroups[s] = new byte[MaxGroups * Format.KeyGroupBytes];
            Values[s] = new byte[Format.ValueBytes(capacity)];
            ResidualK[s] = new float[ResidualMax * _headDim];
            ResidualV[s] = new float[ResidualMax * _headDim];
        }
        Quantized = new int[config.LayerCount];
        Residual = new int[config.LayerCount];
        Bytes = BytesFor(config, capacity, bits, groupSize, residualLength);
    }

    /// <summary>Exact bytes a copy of <paramref name="capacity"/> tokens allocates, before allocating it.</summary>
    public static long BytesFor(ModelConfig config, int capacity, int bits, int groupSize, int residualLength)
    {
        var format = new KiviFormat(config.HeadDim, groupSize, bits);
        long maxGroups = capacity / groupSize + 1, residualMax = residualLength + groupSize;
        return (long)config.LayerCount * config.KvHeadCount * (maxGroups * format.KeyGroupBytes
            + format.ValueBytes(capacity) + 2L * residualMax * config.HeadDim * sizeof(float));
    }

    public KiviFormat Format { get; }
    public int GroupSize => Format.GroupSize;
    /// <summary>R + G: the residual folds its oldest group when it reaches this many tokens.</summary>
    public int ResidualMax { get; }
    public int MaxGroups { get; }
    /// <summary>Exact bytes held: key groups, value tokens and the residual.</summary>
    public long Bytes { get; }

    // Per layer and KV head (slot = layer * kvHeads + head).
    internal byte[][] KeyGroups { get; }    // (maxGroups, KeyGroupBytes)
    internal byte[][] Values { get; }       // value blocks of capacity tokens
    internal float[][] ResidualK { get; }   // (R + G, headDim), oldest first
    internal float[][] ResidualV { get; }
    // Per layer.
    internal int[] Quantized { get; }       // tokens in the low-bit part (a multiple of G)
    internal int[] Residual { get; }        // tokens in the residual

    /// <summary>Fast-tier bytes per token of the low-bit part, over all layers (the residual is a constant on top).</summary>
    public static long BytesPerToken(ModelConfig config, int bits, int groupSize)
    {
        if (config.HeadDim % KiviFormat.HeadDimMultiple != 0)
            throw new NotSupportedException($"a low-bit KV copy needs a head size that is a multiple of {KiviFormat.HeadDimMultiple} (this model's is {config.HeadDim})");
        var format = new KiviFormat(config.HeadDim, groupSize, bits);
        return (long)config.LayerCount * config.KvHeadCount * (format.KeyGroupBytes / groupSize + format.ValueTokenBytes);
    }

    /// <summary>Adds one token of <paramref name="layer"/> (every KV head's key and value, kvHeads × headDim each) to the residual.</summary>
    public void Add(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        int at = Residual[layer];
        for (int h = 0; h < _kvHeads; h++)
        {
            int slot = layer * _kvHeads + h;
            keys.Slice(h * _headDim, _headDim).CopyTo(ResidualK[slot].AsSpan(at * _headDim));
            values.Slice(h * _headDim, _headDim).CopyTo(ResidualV[slot].AsSpan(at * _headDim));
        }
        Residual[layer]++;
        if (Residual[layer] == ResidualMax) Fold(layer);
    }

    /// <summary>Quantizes the residual's oldest group of G tokens into the low-bit copy and drops them from the residual.</summary>
    void Fold(int layer)
    {
        int g = GroupSize;
        int groupIndex = Quantized[layer] / g;
        for (int h = 0; h < _kvHeads; h++)
        {
            int slot = layer * _kvHeads + h;
            KiviQuantizer.QuantizeKeyGroup(Format, ResidualK[slot].AsSpan(0, g * _headDim), _headDim,
                KeyGroups[slot].AsSpan(groupIndex * Format.KeyGroupBytes, Format.KeyGroupBytes));
            for (int t = 0; t < g; t++)
                KiviQuantizer.QuantizeValueToken(Format, ResidualV[slot].AsSpan(t * _headDim, _headDim), Values[slot], Quantized[layer] + t);
            int keep = (Residual[layer] - g) * _headDim;
            ResidualK[slot].AsSpan(g * _headDim, keep).CopyTo(ResidualK[slot]);
            ResidualV[slot].AsSpan(g * _headDim, keep).CopyTo(ResidualV[slot]);
        }
        Quantized[layer] += g;
        Residual[layer] -= g;
    }

    /// <summary>Forgets every token.</summary>
    public void Clear()
    {
        Array.Clear(Quantized);
        Array.Clear(Residual);
    }
}
