namespace SpeCache.Quants;

/// <summary>
/// The one place that says how each weight format turns into floats and back. Transformer code
/// never switches on formats; it asks the backend for a matmul and the backend asks this table
/// (<see cref="TypeTraits"/>).
/// </summary>
public static class WeightFormats
{
    /// <summary>Dequantizes one row (a whole number of blocks) into <paramref name="destination"/>.</summary>
    public static void DequantizeRow(GgmlType type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        CheckRow(type, destination.Length, source.Length);
        TypeTraits.Of(type).DequantizeRow(source, destination);
    }

    /// <summary>
    /// Quantizes one row (a whole number of blocks) with ggml's reference quantizer of
    /// <paramref name="type"/>, so the bytes are those llama.cpp would write.
    /// </summary>
    public static void QuantizeRow(GgmlType type, ReadOnlySpan<float> source, Span<byte> destination)
    {
        CheckRow(type, source.Length, destination.Length);
        TypeTraits.Of(type).QuantizeRow(source, destination);
    }

    static void CheckRow(GgmlType type, int elements, int bytes)
    {
        long need = GgmlTypeInfo.RowBytes(type, elements);
        if (bytes < need)
            throw new ArgumentException($"a {GgmlTypeInfo.Name(type)} row of {elements} values needs {need} bytes, got {bytes}");
    }
}
