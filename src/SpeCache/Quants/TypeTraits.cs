using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace SpeCache.Quants;

public delegate void DequantizeRowFn(ReadOnlySpan<byte> source, Span<float> destination);
public delegate void QuantizeRowFn(ReadOnlySpan<float> source, Span<byte> destination);

/// <summary>Dot of one weight row (its stored bytes) with one activation row already in <see cref="TypeTraits.ActivationType"/>.</summary>
public delegate float RowDotFn(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int cols);

/// <summary>One weight row against two activation rows; results bit-identical to two <see cref="RowDotFn"/> calls.</summary>
public delegate void RowDot2Fn(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> x0, ReadOnlySpan<byte> x1, int cols, out float y0, out float y1);

/// <summary>
/// How one weight format is computed, as ggml's <c>type_traits</c>: to and from floats, the
/// format activations are quantized to before the dot (ggml's <c>vec_dot_type</c>), and the dot.
/// Unlike ggml, F16/BF16 weights keep float activations (converted in registers), so no
/// precision is lost on the activation side. <see cref="Dot2"/>, where present, shares the
/// weight unpacking between two activation rows (prefill, the two-row speculative decode).
/// </summary>
public sealed record TypeTraits(
    GgmlType Type,
    DequantizeRowFn DequantizeRow,
    QuantizeRowFn QuantizeRow,
    GgmlType ActivationType,
    QuantizeRowFn QuantizeActivation,
    RowDotFn Dot,
    RowDot2Fn? Dot2 = null)
{
    static readonly TypeTraits?[] Table = Build();

    /// <summary>
    /// The register-tiled matrix multiply, where this CPU runs one for the format; it then
    /// replaces <see cref="Dot"/> for every row count, so that results never depend on how many
    /// rows a matmul has.
    /// </summary>
    internal TileKernel? Tiles { get; init; }

    /// <summary>The traits of <paramref name="type"/>; throws for formats we cannot compute with.</summary>
    public static TypeTraits Of(GgmlType type) =>
        (uint)type < (uint)Table.Length && Table[(int)type] is { } t
            ? t
            : throw new NotSupportedException($"weight type {GgmlTypeInfo.Name(type)} is not supported");

    static TypeTraits?[] Build()
    {
        QuantizeRowFn floats = static (s, d) => MemoryMarshal.AsBytes(s).CopyTo(d);
        var table = new TypeTraits?[(int)GgmlType.BF16 + 1];
        void Add(TypeTraits t) => table[(int)t.Type] = t;
        Add(new(GgmlType.F32, static (s, d) => MemoryMarshal.Cast<byte, float>(s)[..d.Length].CopyTo(d), floats,
            GgmlType.F32, floats, F32Tiles.Supported ? F32Tiles.RowDot
                : static (w, x, n) => TensorPrimitives.Dot(MemoryMarshal.Cast<byte, float>(w)[..n], MemoryMarshal.Cast<byte, float>(x)[..n]))
        { Tiles = F32Tiles.Supported ? F32Tiles.Instance : null });
        Add(new(GgmlType.F16, F16.DequantizeRow, F16.QuantizeRow, GgmlType.F32, floats, F16.Dot, F16.Dot2)
        { Tiles = HalfTiles<ExactHalves>.Supported ? HalfTiles<ExactHalves>.Instance : null });
        Add(new(GgmlType.BF16, BF16.DequantizeRow, BF16.QuantizeRow, GgmlType.F32, floats, BF16.Dot, BF16.Dot2)
        { Tiles = HalfTiles<BFloat16s>.Supported ? HalfTiles<BFloat16s>.Instance : null });
        Add(new(GgmlType.Q8_0, Q8_0.DequantizeRow, Q8_0.QuantizeRow, GgmlType.Q8_0, Q8_0.QuantizeActivationRow, Q8_0.Dot)
        { Tiles = TileKernel.IsSupported ? Q8_0Tiles<Q8_0Weights>.Instance : null });
        Add(new(GgmlType.Q4_0, Q4_0.DequantizeRow, Q4_0.QuantizeRow, GgmlType.Q8_0, Q8_0.QuantizeActivationRow, Q4_0.Dot)
        { Tiles = Q4_0Tiles.Preferred ? Q4_0Tiles.Instance : TileKernel.IsSupported ? Q8_0Tiles<Q4_0Weights>.Instance : null });
        Add(new(GgmlType.Q4_K, Q4_K.DequantizeRow, Q4_K.QuantizeRow, GgmlType.Q8_K, Q8_K.QuantizeActivationRow, Q4_K.Dot, Q4_K.Dot2)
        { Tiles = Q4_KTiles.Supported ? Q4_KTiles.Instance : Q4_KTiles256.Supported ? Q4_KTiles256.Instance : null });
        Add(new(GgmlType.Q6_K, Q6_K.DequantizeRow, Q6_K.QuantizeRow, GgmlType.Q8_K, Q8_K.QuantizeActivationRow, Q6_K.Dot, Q6_K.Dot2)
        { Tiles = Q6_KTiles.Preferred ? Q6_KTiles.Instance : Q6_KTiles256.Supported ? Q6_KTiles256.Instance : null });
        return table;
    }
}
