using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace SpeCache.Quants;

/// <summary>
/// The one place that says how each weight format turns into floats and back. Transformer code
/// never switches on formats; it asks the backend for a matmul and the backend asks this table.
/// </summary>
public static class WeightFormats
{
    /// <summary>Dequantizes one row (a whole number of blocks) into <paramref name="destination"/>.</summary>
    public static void DequantizeRow(GgmlType type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        switch (type)
        {
            case GgmlType.F32:
                MemoryMarshal.Cast<byte, float>(source)[..destination.Length].CopyTo(destination);
                break;
            case GgmlType.F16:
                {
                    var halves = MemoryMarshal.Cast<byte, Half>(source);
                    for (int i = 0; i < destination.Length; i++) destination[i] = (float)halves[i];
                    break;
                }
            case GgmlType.BF16:
                {
                    var raw = MemoryMarshal.Cast<byte, ushort>(source);
                    for (int i = 0; i < destination.Length; i++) destination[i] = BitConverter.Int32BitsToSingle(raw[i] << 16);
                    break;
                }
            default:
                throw new NotSupportedException($"weight type {GgmlTypeInfo.Name(type)} is not supported");
        }
    }

    /// <summary>
    /// Encodes one row of floats (a whole number of blocks) as <paramref name="type"/> into
    /// <paramref name="destination"/>, which must be exactly one row of that type.
    /// </summary>
    public static void QuantizeRow(GgmlType type, ReadOnlySpan<float> source, Span<byte> destination)
    {
        long rowBytes = GgmlTypeInfo.RowBytes(type, source.Length);
        if (destination.Length != rowBytes)
            throw new ArgumentException($"a {GgmlTypeInfo.Name(type)} row of {source.Length} elements takes {rowBytes} bytes, not {destination.Length}");
        switch (type)
        {
            case GgmlType.F32:
                MemoryMarshal.AsBytes(source).CopyTo(destination);
                break;
            case GgmlType.F16:
                TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<byte, Half>(destination));
                break;
            case GgmlType.BF16:
                {
                    var raw = MemoryMarshal.Cast<byte, ushort>(destination);
                    for (int i = 0; i < source.Length; i++) raw[i] = ToBFloat16(source[i]);
                    break;
                }
            default:
                throw new NotSupportedException($"quantizing to {GgmlTypeInfo.Name(type)} is not supported");
        }
    }

    /// <summary>Rounds to nearest even, as ggml does; NaN stays a (quiet) NaN instead of rounding into infinity.</summary>
    static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7fffffff) > 0x7f800000)
            return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
    }
}
