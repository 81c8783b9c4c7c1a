using SpeCache.KvCache.Quantization;

namespace SpeCache.Tests.KvCache.Quantization;

public class KiviFormatTests
{
    [Theory]
    // headDim, group, bits, key group bytes (4*D header + G*4*ceil(D*b/32) codes), value token bytes (D*b/8 + 4*D/Gv)
    [InlineData(128, 32, 1, 512 + 512, 16 + 16)]
    [InlineData(128, 64, 1, 512 + 1024, 16 + 8)]
    [InlineData(128, 32, 2, 512 + 1024, 32 + 16)]
    [InlineData(128, 64, 2, 512 + 2048, 32 + 8)]
    [InlineData(128, 32, 4, 512 + 2048, 64 + 16)]
    [InlineData(64, 32, 1, 256 + 256, 8 + 8)]
    [InlineData(64, 128, 2, 256 + 2048, 16 + 4)] // value groups are capped at one head of 64 channels
    [InlineData(256, 16, 4, 1024 + 2048, 128 + 64)]
    [InlineData(48, 16, 1, 192 + 16 * 8, 6 + 12)]  // 48 one-bit codes take two words per token, the second half padding
    [InlineData(80, 16, 2, 320 + 16 * 20, 20 + 20)] // 160 bits: five whole words
    public void ByteSizesAreExact(int headDim, int group, int bits, int keyGroupBytes, int valueTokenBytes)
    {
        Assert.Equal(keyGroupBytes, KiviQuantizer.KeyGroupBytes(headDim, group, bits));
        Assert.Equal(valueTokenBytes, KiviQuantizer.ValueTokenBytes(headDim, group, bits));
    }

    [Theory]
    [InlineData(128, 32, 1)]
    [InlineData(64, 64, 2)]
    [InlineData(128, 64, 4)]
    public void QuantizersWriteExactlyTheirBytes(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(1);
        var keys = KiviTestData.Normals(rng, group, headDim);
        var keyBuffer = new byte[format.KeyGroupBytes + 16];
        Array.Fill(keyBuffer, (byte)0xA5);
        KiviQuantizer.QuantizeKeyGroup(format, keys, headDim, keyBuffer);
        Assert.All(keyBuffer[format.KeyGroupBytes..], b => Assert.Equal(0xA5, b));

        var valueBuffer = new byte[format.ValueTokenBytes + 16];
        Array.Fill(valueBuffer, (byte)0xA5);
        KiviQuantizer.QuantizeValueToken(format, keys.AsSpan(0, headDim), valueBuffer);
        Assert.All(valueBuffer[format.ValueTokenBytes..], b => Assert.Equal(0xA5, b));
    }

    [Theory]
    [InlineData(128, 32, 3)]
    [InlineData(128, 32, 8)]
    [InlineData(128, 8, 2)]   // below one vector of 16 tokens
    [InlineData(128, 48, 2)]  // not a power of two
    [InlineData(128, 512, 2)]
    [InlineData(100, 32, 2)]  // not a multiple of 8
    [InlineData(80, 32, 2)]   // value groups of 32 do not tile 80 channels
    public void RejectsFormatsTheKernelsCannotRead(int headDim, int group, int bits) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new KiviFormat(headDim, group, bits));
}

public class KiviCodesTests
{
    [Fact]
    public void HalfToSingleIsExactForEveryFiniteHalf()
    {
        for (int bits = 0; bits < 0x10000; bits++)
        {
            var half = BitConverter.UInt16BitsToHalf((ushort)bits);
            if (!Half.IsFinite(half)) continue;
            float expected = (float)half, actual = KiviCodes.HalfToSingle((ushort)bits);
            if (BitConverter.SingleToInt32Bits(expected) != BitConverter.SingleToInt32Bits(actual))
                Assert.Fail($"Half 0x{bits:X4}: {actual}, expected {expected}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void CodesRoundTripThroughTheirBits(int bits)
    {
        var rng = new Random(bits);
        var values = new int[256];
        var packed = new byte[256 * bits / 8];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = rng.Next(1 << bits);
            KiviCodes.Write(packed, i, bits, values[i]);
        }
        for (int i = 0; i < values.Length; i++) Assert.Equal(values[i], KiviCodes.Read(packed, i, bits));
    }
}
