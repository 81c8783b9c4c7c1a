using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.KvCache.Quantization;

/// <summary>A code width as a type, so that a generic kernel is compiled once per width with the width a constant.</summary>
internal interface ICodeWidth
{
    static abstract int Bits { get; }
}

internal readonly struct OneBit : ICodeWidth { public static int Bits => 1; }
internal readonly struct TwoBits : ICodeWidth { public static int Bits => 2; }
internal readonly struct FourBits : ICodeWidth { public static int Bits => 4; }

/// <summary>
/// Reading and writing packed b-bit codes: code i sits at bit i*b, little-endian. b divides 8, so a
/// code never straddles two bytes.
/// </summary>
internal static class KiviCodes
{
    public static int Read(ReadOnlySpan<byte> codes, int index, int bits)
    {
        int bit = index * bits;
        return (codes[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
    }

    /// <summary>ORs <paramref name="code"/> in; the destination starts cleared.</summary>
    public static void Write(Span<byte> codes, int index, int bits, int code)
    {
        int bit = index * bits;
        codes[bit >> 3] |= (byte)(code << (bit & 7));
    }

    /// <summary>Token <paramref name="token"/>'s key code of channel <paramref name="channel"/> in a key group's codes (<see cref="KiviFormat.KeyCodePlace"/>).</summary>
    public static int ReadKey(ReadOnlySpan<byte> codes, KiviFormat format, int token, int channel)
    {
        var (offset, shift) = format.KeyCodePlace(token, channel);
        return (int)(BinaryPrimitives.ReadUInt32LittleEndian(codes[offset..]) >> shift) & format.MaxCode;
    }

    /// <summary>ORs a key code in at its place; the codes start cleared.</summary>
    public static void WriteKey(Span<byte> codes, KiviFormat format, int token, int channel, int code)
    {
        var (offset, shift) = format.KeyCodePlace(token, channel);
        var word = codes[offset..];
        BinaryPrimitives.WriteUInt32LittleEndian(word, BinaryPrimitives.ReadUInt32LittleEndian(word) | (uint)code << shift);
    }

    const float TwoPow112 = 5.192296858534828E+33f; // 2^112, exact; a constant, so no class-init check where it is read

    /// <summary>
    /// A stored Half as a float, in a few integer instructions: the runtime's scalar (float)Half is a
    /// general routine that cost the value kernel about 2 ns per scale. Exponent and mantissa move to
    /// float's positions, then a multiply by 2^112 (the difference of the exponent biases) rescales,
    /// which also turns Half subnormals into the right normal floats. Exact for every finite Half;
    /// Inf and NaN (never stored: scales and zeros come from finite keys and values) come out finite.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HalfToSingle(ushort bits)
    {
        float magnitude = BitConverter.Int32BitsToSingle((bits & 0x7FFF) << 13) * TwoPow112;
        return BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(magnitude) | ((bits & 0x8000) << 16));
    }

    /// <summary>True when the 512-bit kernels can run; otherwise the scalar references do the work.</summary>
    public static bool VectorPath => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>
    /// 16 consecutive codes (2*Bits bytes at <paramref name="chunk"/>) as 16 floats. Every lane gets the
    /// same word by a broadcast, then a per-lane variable shift brings its own code to the bottom: four
    /// instructions for 16 codes, and no lookup tables.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Expand16<TWidth>(ref byte chunk) where TWidth : struct, ICodeWidth
    {
        Vector512<uint> words, shifts;
        if (TWidth.Bits == 1)
        {
            words = Vector512.Create((uint)Unsafe.ReadUnaligned<ushort>(ref chunk));
            shifts = Vector512.Create(0u, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        }
        else if (TWidth.Bits == 2)
        {
            words = Vector512.Create(Unsafe.ReadUnaligned<uint>(ref chunk));
            shifts = Vector512.Create(0u, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        }
        else
        {
            // 16 four-bit codes are 64 bits: lanes 0-7 take the low 32-bit word, lanes 8-15 the high one.
            var both = Vector512.Create(Unsafe.ReadUnaligned<ulong>(ref chunk)).AsUInt32();
            words = Avx512F.PermuteVar16x32(both, Vector512.Create(0u, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
            shifts = Vector512.Create(0u, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        }
        var codes = Avx512F.ShiftRightLogicalVariable(words, shifts) & Vector512.Create((uint)((1 << TWidth.Bits) - 1));
        return Vector512.ConvertToSingle(codes.AsInt32());
    }
}
