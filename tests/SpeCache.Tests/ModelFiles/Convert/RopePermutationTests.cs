using SpeCache.ModelFiles.Conversion;

namespace SpeCache.Tests.ModelFiles.Convert;

public class RopePermutationTests
{
    [Fact]
    public void NeoXPairsBecomeAdjacent()
    {
        const int headDim = 8, heads = 3;
        // Label each NeoX row by (head, pair, member): pair i of a head sits at rows i and i + 4.
        for (int head = 0; head < heads; head++)
            for (int pair = 0; pair < headDim / 2; pair++)
            {
                long first = head * headDim + 2 * pair;
                Assert.Equal(head * headDim + pair, RopePermutation.NeoXRowForInterleaved(first, headDim, headDim));
                Assert.Equal(head * headDim + pair + headDim / 2, RopePermutation.NeoXRowForInterleaved(first + 1, headDim, headDim));
            }
    }

    [Fact]
    public void MatchesLlamaCppPermuteForOneHead()
    {
        // convert_hf_to_gguf.py's permute on 8 rows, one head: reshape(1, 2, 4).swapaxes(1, 2) gives rows 0,4,1,5,2,6,3,7.
        long[] expected = [0, 4, 1, 5, 2, 6, 3, 7];
        for (int row = 0; row < 8; row++)
            Assert.Equal(expected[row], RopePermutation.NeoXRowForInterleaved(row, 8, 8));
    }

    [Theory]
    [InlineData(8, 8)]
    [InlineData(8, 4)]
    [InlineData(6, 6)]
    public void TheTwoDirectionsAreInverses(int headDim, int ropeDim)
    {
        for (long row = 0; row < 4 * headDim; row++)
        {
            Assert.Equal(row, RopePermutation.InterleavedRowForNeoX(RopePermutation.NeoXRowForInterleaved(row, headDim, ropeDim), headDim, ropeDim));
            Assert.Equal(row, RopePermutation.NeoXRowForInterleaved(RopePermutation.InterleavedRowForNeoX(row, headDim, ropeDim), headDim, ropeDim));
        }
    }

    [Fact]
    public void RowsPastTheRotaryPartStayPut()
    {
        // Partial rotary: 4 of 8 dimensions rotated, pairs (0,2),(1,3) -> rows 0,2,1,3; rows 4..7 unchanged.
        long[] expected = [0, 2, 1, 3, 4, 5, 6, 7];
        for (int row = 0; row < 8; row++)
            Assert.Equal(expected[row], RopePermutation.NeoXRowForInterleaved(row, 8, 4));
    }
}
