using SpeCache.Bench;

namespace SpeCache.Tests.Bench;

public class MemoryBandwidthTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void EachTriadIsKeptAndMeasuresBytesPerSecond(int threads)
    {
        var bandwidth = new MemoryBandwidth(threads, arrayBytes: 4L << 20, repeats: 2);
        Assert.Empty(bandwidth.Samples); // setting up measures nothing
        double first = bandwidth.Triad(), second = bandwidth.Triad();
        Assert.Equal([first, second], bandwidth.Samples);
        // Three 4 MiB arrays in well under a second and faster than any machine's memory: a real measurement, in bytes/s.
        Assert.All(bandwidth.Samples, b => Assert.InRange(b, 12.0 * (1 << 20), 1e13));
    }

    [Fact]
    public void AroundTimesItsWorkBetweenTwoTriadsAndReturnsTheHigher()
    {
        var bandwidth = new MemoryBandwidth(1, arrayBytes: 4L << 20, repeats: 1);
        int samplesSeenInside = -1;
        var (result, bytesPerSecond) = bandwidth.Around(() =>
        {
            samplesSeenInside = bandwidth.Samples.Count;
            return "timed";
        });
        Assert.Equal("timed", result);
        Assert.Equal(1, samplesSeenInside);
        Assert.Equal(2, bandwidth.Samples.Count);
        Assert.Equal(bandwidth.Samples.Max(), bytesPerSecond);
    }

    [Fact]
    public void RejectsNoThreadsOrNoRepeats()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MemoryBandwidth(0, 1 << 20));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MemoryBandwidth(1, 1 << 20, repeats: 0));
    }
}
