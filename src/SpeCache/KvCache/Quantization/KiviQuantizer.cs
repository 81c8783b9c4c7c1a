using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// KIVI's asymmetric group quantization of the low-bit KV copy: keys per channel (a group is G
/// consecutive tokens of one channel), values per token (a group is G consecutive channels of one
/// token). Scale and zero point are stored as Half next to the codes; <see cref="KiviFormat"/> gives
/// the byte layouts.
/// </summary>
/// <remarks>
/// 2 and 4 bits: zero = min, scale = (max - min) / (2^b - 1), code = clamp(round((x - zero) / scale)),
/// so every value is within scale/2 of its level. 1 bit: zero = (3 min + max) / 4, scale = (max - min) / 2,
/// so the two levels sit at the quartiles, and code = x &gt;= (min + max) / 2: each value goes to the
/// nearer level, again within scale/2 = (max - min) / 4. Codes are chosen against the stored (Half)
/// scale and zero, so the error is the rounding to the grid plus only Half's rounding of the grid
/// itself. A constant group has scale 0 and code 0 and comes back as its Half-rounded value.
/// Like the 16-bit cache, inputs must lie within Half's range (|x| &lt;= 65504).
/// Quantization runs once per token and is scalar; the kernels that read the codes every step are
/// in <see cref="KiviAttention"/>.
/// </remarks>
public static class KiviQuantizer
{
    /// <summary>Exact bytes of a packed key group; see <see cref="KiviFormat"/>.</summary>
    public static int KeyGroupBytes(int headDim, int groupSize, int bits) => new KiviFormat(headDim, groupSize, bits).KeyGroupBytes;

    /// <summary>Bytes a value token takes (values are kept in blocks of 16); see <see cref="KiviFormat"/>.</summary>
    public static int ValueTokenBytes(int headDim, int groupSize, int bits) => new KiviFormat(headDim, groupSize, bits).ValueTokenBytes;

    /// <summary>
    /// Quantizes G = <see cref="KiviFormat.GroupSize"/> tokens' keys of one head, token t's row at
    /// <c>keys[t * rowStride ..][..HeadDim]</c> (so rows can be read straight from a
    /// [token][kvHead][headDim] buffer), into one key group.
    /// </summary>
    public static void QuantizeKeyGroup(KiviFormat format, ReadOnlySpan<float> keys, int rowStride, Span<byte> destination)
    {
        int d = format.HeadDim, g = format.GroupSize, bits = format.Bits;
        if (rowStride < d) throw new ArgumentOutOfRangeException(nameof(rowStride), rowStride, $"rows of {d} floats cannot be {rowStride} apart");
        if (keys.Length < (g - 1) * rowStride + d) throw new ArgumentException($"a key group needs {g} rows of {d} floats, {rowStride} apart", nameof(keys));
        var group = destination[..format.KeyGroupBytes];
        group.Clear();
        var scales = MemoryMarshal.Cast<byte, Half>(group[..(2 * d)]);
        var zeros = MemoryMarshal.Cast<byte, Half>(group.Slice(2 * d, 2 * d));
        var codes = group[format.KeyCodesOffset..];
        for (int c = 0; c < d; c++)
        {
            float min = float.PositiveInfinity, max = float.NegativeInfinity;
            for (int t = 0; t < g; t++)
            {
                float x = keys[t * rowStride + c];
                min = MathF.Min(min, x);
                max = MathF.Max(max, x);
            }
            var grid = Grid.Of(min, max, bits);
            scales[c] = grid.Scale;
            zeros[c] = grid.Zero;
            for (int t = 0; t < g; t++)
                KiviCodes.WriteKey(codes, format, t, c, grid.Code(keys[t * rowStride + c]));
        }
    }

    /// <summary>Reference: a key group back to floats, laid out [token][HeadDim]. Tests only; the kernels never call it.</summary>
    public static void DequantizeKeyGroup(KiviFormat format, ReadOnlySpan<byte> group, Span<float> destination)
    {
        int d = format.HeadDim, g = format.GroupSize;
        if (destination.Length < g * d) throw new ArgumentException($"a key group is {g} x {d} floats", nameof(destination));
        var scales = MemoryMarshal.Cast<byte, Half>(group[..(2 * d)]);
        var zeros = MemoryMarshal.Cast<byte, Half>(group.Slice(2 * d, 2 * d));
        var codes = group.Slice(format.KeyCodesOffset, format.KeyCodeBytes);
        for (int c = 0; c < d; c++)
        {
            float s = (float)scales[c], z = (float)zeros[c];
            for (int t = 0; t < g; t++)
                destination[t * d + c] = z + s * KiviCodes.ReadKey(codes, format, t, c);
        }
    }

    /// <summary>
    /// Quantizes one token's value row (HeadDim floats) into token <paramref name="position"/> of the
    /// value blocks in <paramref name="values"/>, replacing whatever that token held; other tokens'
    /// bits are left alone.
    /// </summary>
    public static void QuantizeValueToken(KiviFormat format, ReadOnlySpan<float> value, Span<byte> values, long position)
    {
        int d = format.HeadDim, gv = format.ValueGroupSize, bits = format.Bits;
        if (value.Length < d) throw new ArgumentException($"a value row is {d} floats", nameof(value));
        if (position < 0 || values.Length < format.ValueBytes(position + 1))
            throw new ArgumentException($"value token {position} needs {format.ValueBytes(position + 1)} bytes of value blocks, got {values.Length}", nameof(values));
        for (int grp = 0; grp < format.ValueGroupsPerToken; grp++)
        {
            var x = value.Slice(grp * gv, gv);
            var grid = Grid.Of(TensorPrimitives.Min(x), TensorPrimitives.Max(x), bits);
            long scaleAt = format.ValueScaleOffset(position, grp);
            BinaryPrimitives.WriteHalfLittleEndian(values[(int)scaleAt..], grid.Scale);
            BinaryPrimitives.WriteHalfLittleEndian(values[(int)(scaleAt + format.ValueZeroDistance)..], grid.Zero);
            for (int i = 0; i < gv; i++)
            {
                var (at, shift) = format.ValueCodePlace(position, grp * gv + i);
                values[(int)at] = (byte)(values[(int)at] & ~(format.MaxCode << shift) | grid.Code(x[i]) << shift);
            }
        }
    }

    /// <summary>Reference: value token <paramref name="position"/> of the value blocks back to HeadDim floats. Tests only; the kernels never call it.</summary>
    public static void DequantizeValueToken(KiviFormat format, ReadOnlySpan<byte> values, long position, Span<float> destination)
    {
        int d = format.HeadDim, gv = format.ValueGroupSize;
        for (int c = 0; c < d; c++)
        {
            long scaleAt = format.ValueScaleOffset(position, c / gv);
            float scale = (float)BinaryPrimitives.ReadHalfLittleEndian(values[(int)scaleAt..]);
            float zero = (float)BinaryPrimitives.ReadHalfLittleEndian(values[(int)(scaleAt + format.ValueZeroDistance)..]);
            destination[c] = zero + scale * KiviCodes.ReadValue(values, format, position, c);
        }
    }

    /// <summary>One group's levels: zero + scale * code, code in 0 .. 2^bits - 1, and the rule that picks the code.</summary>
    readonly struct Grid
    {
        public readonly Half Scale, Zero;
        readonly float _scale, _zero, _threshold;
        readonly int _bits;

        Grid(Half scale, Half zero, float threshold, int bits)
        {
            Scale = scale;
            Zero = zero;
            _scale = (float)scale;
            _zero = (float)zero;
            _threshold = threshold;
            _bits = bits;
        }

        public static Grid Of(float min, float max, int bits) => bits == 1
            // Quartile levels; the midpoint decides, as DESIGN.md specifies. (3 min + max) / 4 is exactly
            // min for a constant group, so it comes back as itself.
            ? new Grid((Half)((max - min) * 0.5f), (Half)((3 * min + max) * 0.25f), (min + max) * 0.5f, 1)
            : new Grid((Half)((max - min) / ((1 << bits) - 1)), (Half)min, 0, bits);

        public int Code(float x)
        {
            if (_bits == 1) return x >= _threshold ? 1 : 0;
            if (_scale == 0) return 0; // constant group (or a range below Half's resolution): every value is the zero
            float q = MathF.Round((x - _zero) / _scale);
            return (int)Math.Clamp(q, 0f, (1 << _bits) - 1);
        }
    }
}
