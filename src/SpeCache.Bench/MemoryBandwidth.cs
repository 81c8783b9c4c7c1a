using System.Diagnostics;
using System.Numerics;

namespace SpeCache.Bench;

/// <summary>
/// STREAM's triad, a[i] = b[i] + s * c[i], over arrays far bigger than any cache, on a given number of
/// threads: the memory bandwidth a bandwidth-bound decode step can hope for on this machine.
/// </summary>
public static class MemoryBandwidth
{
    /// <summary>Best bytes/s of <paramref name="repeats"/> triads (after one warm-up), counted as STREAM counts them: 3 arrays of 8-byte values.</summary>
    /// <param name="arrayBytes">Bytes of each of the three arrays.</param>
    public static double Triad(int threads, long arrayBytes = 128L << 20, int repeats = 5)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        int n = checked((int)(arrayBytes / sizeof(double)));
        var a = GC.AllocateUninitializedArray<double>(n);
        var b = GC.AllocateUninitializedArray<double>(n);
        var c = GC.AllocateUninitializedArray<double>(n);
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads };
        // Each thread touches its own slice first, so pages sit where that thread runs (as STREAM does).
        Parallel.For(0, threads, options, t =>
        {
            var (start, length) = Slice(n, threads, t);
            a.AsSpan(start, length).Fill(1);
            b.AsSpan(start, length).Fill(2);
            c.AsSpan(start, length).Fill(3);
        });

        double best = double.MaxValue;
        for (int r = 0; r <= repeats; r++)
        {
            long begin = Stopwatch.GetTimestamp();
            Parallel.For(0, threads, options, t =>
            {
                var (start, length) = Slice(n, threads, t);
                Kernel(a.AsSpan(start, length), b.AsSpan(start, length), c.AsSpan(start, length), 3.0);
            });
            double seconds = Stopwatch.GetElapsedTime(begin).TotalSeconds;
            if (r > 0) best = Math.Min(best, seconds);
        }
        // A wrong result would mean the loop measured nothing real.
        if (a[n / 2] != 2 + 3.0 * 3) throw new InvalidOperationException("the triad computed a wrong value");
        return 3.0 * sizeof(double) * n / best;
    }

    static (int Start, int Length) Slice(int n, int parts, int index)
    {
        int start = (int)((long)n * index / parts), end = (int)((long)n * (index + 1) / parts);
        return (start, end - start);
    }

    static void Kernel(Span<double> a, ReadOnlySpan<double> b, ReadOnlySpan<double> c, double scalar)
    {
        int i = 0, width = Vector<double>.Count;
        var s = new Vector<double>(scalar);
        for (; i <= a.Length - width; i += width)
            (new Vector<double>(b[i..]) + s * new Vector<double>(c[i..])).CopyTo(a[i..]);
        for (; i < a.Length; i++) a[i] = b[i] + scalar * c[i];
    }
}
