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

        // A block of 16 value tokens, every one written: nothing past the block is touched.
        long blockBytes = format.ValueBytes(KiviFormat.BlockTokens);
        Assert.Equal(KiviFormat.BlockTokens * format.ValueTokenBytes, blockBytes);
        var valueBuffer = new byte[blockBytes + 16];
        Array.Fill(valueBuffer, (byte)0xA5);
        for (int t = 0; t < KiviFormat.BlockTokens; t++)
            KiviQuantizer.QuantizeValueToken(format, keys.AsSpan(t * headDim, headDim), valueBuffer, t);
        Assert.All(valueBuffer[(int)blockBytes..], b => Assert.Equal(0xA5, b));
    }

    /// <summary>Every (token, channel) code has its own bits inside the codes: none shared, none outside.</summary>
    [Theory]
    [InlineData(64, 32, 1)]
    [InlineData(48, 16, 1)]
    [InlineData(64, 64, 2)]
    [InlineData(128, 32, 4)]
    [InlineData(8, 32, 1)]
    [InlineData(24, 32, 4)]
    public void EveryCodeHasItsOwnBits(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        var keyBits = new bool[format.KeyCodeBytes * 8];
        for (int t = 0; t < group; t++)
            for (int c = 0; c < headDim; c++)
            {
                var (offset, shift) = format.KeyCodePlace(t, c);
                Assert.Equal(0, offset % 4);
                for (int b = 0; b < bits; b++)
                {
                    int bit = offset * 8 + shift + b;
                    Assert.True(shift + b < 32 && bit < keyBits.Length && !keyBits[bit], $"key token {t} channel {c}: bit {bit}");
                    keyBits[bit] = true;
                }
            }
        // Two blocks of values: codes of a block end where its scales start.
        var valueBits = new bool[format.ValueBytes(2 * KiviFormat.BlockTokens) * 8];
        for (int t = 0; t < 2 * KiviFormat.BlockTokens; t++)
            for (int c = 0; c < headDim; c++)
            {
                var (at, shift) = format.ValueCodePlace(t, c);
                Assert.True(at % format.ValueBlockBytes < format.ValueScalesOffset, $"value token {t} channel {c}: byte {at} is past the codes");
                for (int b = 0; b < bits; b++)
                {
                    long bit = at * 8 + shift + b;
                    Assert.True(shift + b < 8 && !valueBits[bit], $"value token {t} channel {c}: bit {bit}");
                    valueBits[bit] = true;
                }
                for (int grp = 0; grp < format.ValueGroupsPerToken; grp++)
                {
                    long scale = format.ValueScaleOffset(t, grp);
                    Assert.InRange(scale % format.ValueBlockBytes, format.ValueScalesOffset, format.ValueBlockBytes - format.ValueZeroDistance - 2);
                }
            }
    }

    /// <summary>Writing one token of a value block replaces that token only.</summary>
    [Theory]
    [InlineData(64, 64, 1)]
    [InlineData(64, 32, 2)]
    [InlineData(128, 32, 4)]
    public void RewritingAValueTokenLeavesItsNeighbours(int headDim, int group, int bits)
    {
        var format = new KiviFormat(headDim, group, bits);
        var rng = new Random(3);
        var rows = KiviTestData.Normals(rng, KiviFormat.BlockTokens, headDim);
        var other = KiviTestData.Normals(rng, 1, headDim);
        var block = new byte[format.ValueBytes(KiviFormat.BlockTokens)];
        var fresh = new byte[block.Length];
        for (int t = 0; t < KiviFormat.BlockTokens; t++)
        {
            KiviQuantizer.QuantizeValueToken(format, rows.AsSpan(t * headDim, headDim), block, t);
            KiviQuantizer.QuantizeValueToken(format, t == 5 ? other : rows.AsSpan(t * headDim, headDim), fresh, t);
        }
        KiviQuantizer.QuantizeValueToken(format, other, block, 5);
        Assert.Equal(fresh, block);
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

