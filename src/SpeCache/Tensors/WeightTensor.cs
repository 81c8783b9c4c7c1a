using System.Runtime.InteropServices;
using SpeCache.Quants;

namespace SpeCache.Tensors;

/// <summary>
/// A weight tensor that lives in memory we do not own (usually a memory-mapped model file).
/// Shape is in ggml order: <c>Shape[0]</c> is the length of one row (the input dimension of a
/// matrix), the remaining dimensions count rows. Nothing is copied at load; kernels read the
/// bytes in their stored format and dequantize on the fly.
/// </summary>
public sealed unsafe class WeightTensor
{
    /// <param name="owner">
    /// What frees the memory at <paramref name="data"/> when it is collected (a weight arena's
    /// handle), or null when the memory outlives the tensor anyway: the tensor keeps it reachable,
    /// so weights taken from a model stay readable after the model itself is dropped.
    /// </param>
    public WeightTensor(string name, GgmlType type, long[] shape, byte* data, long byteLength, object? owner = null)
    {
        Owner = owner;
        Name = name;
        Type = type;
        Shape = shape;
        Data = data;
        ByteLength = byteLength;
        RowBytes = GgmlTypeInfo.RowBytes(type, shape[0]);
        long rows = 1;
        for (int i = 1; i < shape.Length; i++) rows *= shape[i];
        if (RowBytes * rows != byteLength)
            throw new InvalidDataException($"tensor '{name}': {byteLength} bytes do not hold {string.Join('x', shape)} {GgmlTypeInfo.Name(type)}");
        Rows = rows;
    }

    /// <summary>What keeps the memory alive (see the constructor), or null.</summary>
    internal object? Owner { get; }

    public string Name { get; }
    public GgmlType Type { get; }
    public long[] Shape { get; }
    public byte* Data { get; }
    public long ByteLength { get; }

    /// <summary>Elements per row (ggml ne[0]).</summary>
    public int Cols => checked((int)Shape[0]);
    public long Rows { get; }
    public long RowBytes { get; }
    public long ElementCount => Shape[0] * Rows;

    public ReadOnlySpan<byte> Row(long row) => new(Data + row * RowBytes, checked((int)RowBytes));

    /// <summary>All bytes; only for tensors under 2 GiB (norms, biases, small test models).</summary>
    public ReadOnlySpan<byte> Bytes => new(Data, checked((int)ByteLength));

    public ReadOnlySpan<float> AsFloats()
    {
        if (Type != GgmlType.F32) throw new InvalidOperationException($"tensor '{Name}' is {Type}, not F32");
        return MemoryMarshal.Cast<byte, float>(Bytes);
    }

    int _halvesFinite; // 0: not checked yet, 1: every half finite, 2: an infinity or NaN among them

    /// <summary>
    /// Whether an F16 tensor holds no infinite or NaN half, which lets its matmuls take the short
    /// conversion (<see cref="Quants.ScaledHalves"/>). Checked on first use, one pass over the
    /// tensor (a race computes the same answer twice).
    /// </summary>
    public bool HalvesFinite
    {
        get
        {
            if (Type != GgmlType.F16) return false;
            if (_halvesFinite == 0)
            {
                bool finite = true;
                for (long at = 0; finite && at < ByteLength; at += 1 << 30)
                {
                    int bytes = (int)Math.Min(1 << 30, ByteLength - at);
                    finite = !Quants.F16.AnyInfinityOrNaN(new ReadOnlySpan<ushort>(Data + at, bytes / sizeof(ushort)));
                }
                _halvesFinite = finite ? 1 : 2;
            }
            return _halvesFinite == 1;
        }
    }

    public override string ToString() => $"{Name} {GgmlTypeInfo.Name(Type)} [{string.Join(", ", Shape)}]";
}
