using SpeCache.Quants;

namespace SpeCache.Tests;

public class GgmlTypeTests
{
    [Fact]
    public void RowBytesOfQ8_0()
    {
        Assert.Equal(34 * 4, GgmlTypeInfo.RowBytes(GgmlType.Q8_0, 128));
        Assert.Throws<ArgumentException>(() => GgmlTypeInfo.RowBytes(GgmlType.Q8_0, 100));
    }
}
