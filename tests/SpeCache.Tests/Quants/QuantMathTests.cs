using System.Runtime.Intrinsics;
using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

public unsafe class QuantMathTests
{
    [Fact]
    public void HalfToFloatMatchesDotNetForAllInputs()
    {
        for (int h = 0; h < 65536; h++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            float scalar = QuantMath.ToFloat((ushort)h);
            float vector = QuantMath.HalfToSingle(Vector256.Create((uint)h)).ToScalar();
            if (float.IsNaN(expected))
            {
                Assert.True(float.IsNaN(scalar) && float.IsNaN(vector), $"{h:x4}");
                continue;
            }
            Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(scalar));
            Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(vector));
        }
    }

    /// <summary>The 512-bit conversion, every half in all 16 lanes and beside 15 normal ones.</summary>
    [Fact]
    public void HalfToFloat512MatchesDotNetForAllInputs()
    {
        var mixed = new uint[16];
        for (int i = 1; i < 16; i++) mixed[i] = 0x3C00u + (uint)i; // 1.0 and a little more: normal
        for (int h = 0; h < 65536; h++)
        {
            mixed[0] = (uint)h;
            foreach (var lanes in new[] { Vector512.Create((uint)h), Vector512.Create(mixed) })
            {
                var result = QuantMath.HalfToSingle(lanes);
                for (int i = 0; i < 16; i++)
                {
                    float expected = (float)BitConverter.UInt16BitsToHalf((ushort)lanes[i]);
                    // NaNs may differ in their quiet bit, as the 256-bit conversion's may.
                    Assert.True(float.IsNaN(expected) ? float.IsNaN(result[i])
                        : BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(result[i]),
                        $"{lanes[i]:x4} in lane {i} of a vector led by {h:x4} gave {result[i]}, expected {expected}");
                }
            }
        }
    }

    /// <summary>
    /// The short conversion for halves known finite, 256 and 512 bits, through <see cref="F16"/>'s
    /// pointer loop too (vectors and the scalar tail): every finite half in every lane is exactly
    /// (float)Half.
    /// </summary>
    [Fact]
    public void FiniteHalfToFloatMatchesDotNetForAllFiniteInputs()
    {
        var finite = Enumerable.Range(0, 65536).Where(h => (h & 0x7C00) != 0x7C00).Select(h => (ushort)h).ToArray();
        var converted = new float[finite.Length];
        fixed (ushort* source = finite)
        fixed (float* destination = converted)
            F16.FiniteToSingle(source, destination, finite.Length);
        for (int i = 0; i < finite.Length; i++)
        {
            uint expected = BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf(finite[i]));
            Assert.True(expected == BitConverter.SingleToUInt32Bits(converted[i]), $"{finite[i]:x4} gave {converted[i]}");
            var lanes256 = QuantMath.FiniteHalfToSingle(Vector256.Create(0x3C01).WithElement(i % 8, (int)(short)finite[i]));
            Assert.Equal(expected, BitConverter.SingleToUInt32Bits(lanes256[i % 8]));
            var lanes512 = QuantMath.FiniteHalfToSingle(Vector512.Create(0x3C01).WithElement(i % 16, (int)(short)finite[i]));
            Assert.Equal(expected, BitConverter.SingleToUInt32Bits(lanes512[i % 16]));
        }
    }

    /// <summary>An infinity or NaN anywhere (in the vector part or the tail, either sign) is found; the largest finite halves are not one.</summary>
    [Fact]
    public void InfinitiesAndNaNsAreFoundAnywhere()
    {
        var halves = new ushort[37];
        for (int i = 0; i < halves.Length; i++) halves[i] = (ushort)(i % 2 == 0 ? 0x7BFF : 0xFBFF); // ±65504
        Assert.False(F16.AnyInfinityOrNaN(halves));
        foreach (ushort special in new ushort[] { 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF })
            for (int at = 0; at < halves.Length; at++)
            {
                var copy = (ushort[])halves.Clone();
                copy[at] = special;
                Assert.True(F16.AnyInfinityOrNaN(copy), $"{special:x4} at {at} of {copy.Length} was missed");
            }
    }

    /// <summary>The 128-bit conversion (a Q4_K block's d and dmin together), every half in every lane.</summary>
    [Fact]
    public void HalfToFloat128MatchesDotNetForAllInputs()
    {
        for (int h = 0; h < 65536; h++)
            for (int lane = 0; lane < 4; lane++)
            {
                var lanes = Vector128.Create(0x3C01u).WithElement(lane, (uint)h);
                float result = QuantMath.HalfToSingle(lanes)[lane];
                float expected = (float)BitConverter.UInt16BitsToHalf((ushort)h);
                Assert.True(float.IsNaN(expected) ? float.IsNaN(result)
                    : BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(result),
                    $"{h:x4} in lane {lane} gave {result}, expected {expected}");
            }
    }

    [Fact]
    public void Q4KScaleUnpackMatchesPerSubBlockDecode()
    {
        var rng = new Random(3);
        var bytes = new byte[12];
        for (int trial = 0; trial < 1000; trial++)
        {
            rng.NextBytes(bytes);
            fixed (byte* p = bytes)
            {
                Q4_K.Unpack(p, out ulong sc, out ulong mins);
                for (int j = 0; j < 8; j++)
                {
                    Q4_K.ScaleMin(j, p, out int s, out int m);
                    Assert.Equal(s, (int)(byte)(sc >> (8 * j)));
                    Assert.Equal(m, (int)(byte)(mins >> (8 * j)));
                }
            }
        }
    }

    [Theory]
    [InlineData(0.5f, 0)]
    [InlineData(1.5f, 2)]
    [InlineData(2.5f, 2)]
    [InlineData(-2.5f, -2)]
    [InlineData(2.4999998f, 2)]
    [InlineData(-3.7f, -4)]
    public void NearestIntRoundsHalfToEvenLikeGgml(float x, int expected) => Assert.Equal(expected, QuantMath.NearestInt(x));

    [Fact]
    public void Avx2AndVnniByteDotsAgreeWithScalarIncludingExtremes()
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) Assert.Skip("no AVX2");
        var rng = new Random(9);
        var u = new byte[32];
        var v = new sbyte[32];
        for (int trial = 0; trial < 2000; trial++)
        {
            // Our operands: unsigned side at most 128 (|-128| of a Q8_0 weight), signed side ±127.
            for (int i = 0; i < 32; i++)
            {
                u[i] = (byte)(trial % 3 == 0 ? 128 : rng.Next(0, 129));
                v[i] = (sbyte)(trial % 3 == 0 ? 127 : rng.Next(-127, 128));
            }
            var expected = new int[8];
            for (int i = 0; i < 32; i++) expected[i / 4] += u[i] * v[i];
            var vu = Vector256.Create(u);
            var vv = Vector256.Create(v);
            var avx2 = QuantMath.UnsignedDotAvx2(vu, vv);
            var dispatched = QuantMath.UnsignedDot(vu, vv);
            for (int k = 0; k < 8; k++)
            {
                Assert.Equal(expected[k], avx2.GetElement(k));
                Assert.Equal(expected[k], dispatched.GetElement(k));
            }
        }
    }
}
