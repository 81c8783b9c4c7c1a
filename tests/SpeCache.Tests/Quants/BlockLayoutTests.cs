using System.Runtime.CompilerServices;
using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

public class BlockLayoutTests
{
    [Fact]
    public void BlockStructsHaveGgmlSizes()
    {
        // ggml-common.h static_asserts these; a padding byte here would shift every block after the first.
        Assert.Equal(34, Unsafe.SizeOf<BlockQ8_0>());
        Assert.Equal(18, Unsafe.SizeOf<BlockQ4_0>());
        Assert.Equal(144, Unsafe.SizeOf<BlockQ4_K>());
        Assert.Equal(210, Unsafe.SizeOf<BlockQ6_K>());
        Assert.Equal(292, Unsafe.SizeOf<BlockQ8_K>());
    }

    [Theory]
    [InlineData(GgmlType.Q8_0, Q8_0.BlockSize, Q8_0.BlockBytes)]
    [InlineData(GgmlType.Q4_0, Q4_0.BlockSize, Q4_0.BlockBytes)]
    [InlineData(GgmlType.Q4_K, Q4_K.BlockSize, Q4_K.BlockBytes)]
    [InlineData(GgmlType.Q6_K, Q6_K.BlockSize, Q6_K.BlockBytes)]
    [InlineData(GgmlType.Q8_K, Q8_K.BlockSize, Q8_K.BlockBytes)]
    public void ConstantsAgreeWithGeometryTable(GgmlType type, int blockSize, int blockBytes) =>
        Assert.Equal((blockSize, blockBytes), GgmlTypeInfo.Geometry(type));

    [Fact]
    public void EveryComputableTypeHasTraits()
    {
        foreach (var type in Enum.GetValues<GgmlType>())
        {
            if (GgmlTypeInfo.IsSupportedWeight(type))
                Assert.Equal(type, TypeTraits.Of(type).Type);
            else
                Assert.Throws<NotSupportedException>(() => TypeTraits.Of(type));
        }
    }
}
