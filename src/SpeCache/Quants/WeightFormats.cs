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
}
