using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.KvCache.Quantization;

/// <summary>The kernels that read KIVI codes, the widest that runs chosen by <see cref="KiviAttention.BestKernel"/>; tests run each one the CPU has against the scalar reference.</summary>
public enum KiviKernel
{
    Scalar,
    Vector128,
    Vector256,
    Vector512,
}

/// <summary>A code width as a type, so that a generic kernel is compiled once per width with the width a constant.</summary>
internal interface ICodeWidth
{
    static abstract int Bits { get; }
}

internal readonly struct OneBit : ICodeWidth { public static int Bits => 1; }
internal readonly struct TwoBits : ICodeWidth { public static int Bits => 2; }
internal readonly struct FourBits : ICodeWidth { public static int Bits => 4; }

/// <summary>
/// Reading and writing b-bit codes at their places in key groups and value blocks
/// (<see cref="KiviFormat"/>), and the vector pieces the kernels share. b divides 4, so a code never
/// straddles a nibble.
/// </summary>
internal static class KiviCodes
{
    /// <summary>Token <paramref name="token"/>'s key code of channel <paramref name="channel"/> in a key group's codes (<see cref="KiviFormat.KeyCodePlace"/>).</summary>
    public static int ReadKey(ReadOnlySpan<byte> codes, KiviFormat format, int token, int channel)
    {
        var (offset, shift) = format.KeyCodePlace(token, channel);
        return (int)(BinaryPrimitives.ReadUInt32LittleEndian(codes[offset..]) >> shift) & format.MaxCode;
    }

    /// <summary>Value token <paramref name="token"/>'s code of channel <paramref name="channel"/> in value blocks (<see cref="KiviFormat.ValueCodePlace"/>).</summary>
    public static int ReadValue(ReadOnlySpan<byte> values, KiviFormat format, long token, int channel)
    {
        var (at, shift) = format.ValueCodePlace(token, channel);
        return values[(int)at] >> shift & format.MaxCode;
    }

    /// <summary>ORs a key code in at its place; the codes start cleared.</summary>
    public static void WriteKey(Span<byte> codes, KiviFormat format, int token, int channel, int code)
    {
        var (offset, shift) = format.KeyCodePlace(token, channel);
        var word = codes[offset..];
        BinaryPrimitives.WriteUInt32LittleEndian(word, BinaryPrimitives.ReadUInt32LittleEndian(word) | (uint)code << shift);
    }

    /// <summary>
    /// 16 consecutive nibbles (8 bytes at <paramref name="chunk"/>), nibble i in the low 4 bits of lane
    /// i (higher bits hold other nibbles, which a permute's index ignores). With AVX-512 VBMI one
    /// <c>vpmultishiftqb</c> copies to byte 0 of each lane the 8 bits starting at its nibble; without
    /// it lanes 0-7 take the low 32-bit word, lanes 8-15 the high one, and a per-lane shift brings each
    /// lane's nibble down (two operations instead of one, 16 per block of a four-head value pass).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> Nibbles16(ref byte chunk)
    {
        var both = Vector512.Create(Unsafe.ReadUnaligned<ulong>(ref chunk));
        if (Avx512Vbmi.IsSupported)
        {
            // Byte 0 of lane i (byte 4i of the vector, in 64-bit lane i / 2) takes bits 4i .. 4i + 7 of that lane.
            var offsets = Vector512.Create(0x0000_0004_0000_0000ul, 0x0000_000C_0000_0008, 0x0000_0014_0000_0010, 0x0000_001C_0000_0018,
                0x0000_0024_0000_0020, 0x0000_002C_0000_0028, 0x0000_0034_0000_0030, 0x0000_003C_0000_0038).AsByte();
            return Avx512Vbmi.MultiShift(offsets, both).AsInt32();
        }
        var words = Avx512F.PermuteVar16x32(both.AsInt32(), Vector512.Create(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
        return Avx512F.ShiftRightLogicalVariable(words, Vector512.Create(0u, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28));
    }
}
