using System.Diagnostics;
using System.Numerics;

namespace SpeCache.Bench;

/// <summary>
/// STREAM's triad, a[i] = b[i] + s * c[i], over arrays far bigger than any cache, on a given number of
/// threads: the memory bandwidth a bandwidth-bound decode step can hope for on this machine.
/// </summary>
/// <remarks>
/// The arrays are kept for the whole run so that the bandwidth can be measured again beside every
/// row (<see cref="Around{T}"/>): on a shared machine it moves by half within an hour (26 to 52 GB/s
/// on the 2-core VM of bench/Bench/RESULTS.md), so one figure taken at the start of a long run would
/// put the row that ran while a neighbour was busy far under its roofline and another far over it.
/// </remarks>
public sealed class MemoryBandwidth
{
    readonly double[] _a, _b, _c;
    readonly int _threads;
    readonly int _repeats;
    readonly List<double> _samples = [];

    /// <param name="arrayBytes">Bytes of each of the three arrays.</param>
    /// <param name="repeats">Triads timed per measurement (after one warm-up); the best counts.</param>
    public MemoryBandwidth(int threads, long arrayBytes = 128L << 20, int repeats = 5)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        _threads = threads;
        _repeats = repeats;
        int n = checked((int)(arrayBytes / sizeof(double)));
        _a = GC.AllocateUninitializedArray<double>(n);
        _b = GC.AllocateUninitializedArray<double>(n);
        _c = GC.AllocateUninitializedArray<double>(n);
        // Each thread touches its own slice first, so pages sit where that thread runs (as STREAM does).
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            var (start, length) = Slice(n, threads, t);
            _a.AsSpan(start, length).Fill(1);
            _b.AsSpan(start, length).Fill(2);
            _c.AsSpan(start, length).Fill(3);
        });
    }

    /// <summary>Every measurement so far, in bytes/s, in the order taken.</summary>
    public IReadOnlyList<double> Samples => _samples;

    /// <summary>Best bytes/s of the triads of one measurement, counted as STREAM counts them: 3 arrays of 8-byte values.</summary>
    public double Triad()
    {
        int n = _a.Length;
        var options = new ParallelOptions { MaxDegreeOfParallelism = _threads };
        // A scalar of its own per measurement, so the check below sees this measurement's writes, not an earlier one's.
        double scalar = 3.0 + _samples.Count;
        double best = double.MaxValue;
        for (int r = 0; r <= _repeats; r++)
        {
            long begin = Stopwatch.GetTimestamp();
            Parallel.For(0, _threads, options, t =>
            {
                var (start, length) = Slice(n, _threads, t);
                Kernel(_a.AsSpan(start, length), _b.AsSpan(start, length), _c.AsSpan(start, length), scalar);
            });
            double seconds = Stopwatch.GetElapsedTime(begin).TotalSeconds;
            if (r > 0) best = Math.Min(best, seconds);
        }
        // A wrong result would mean the loop measured nothing real.
        if (_a[n / 2] != 2 + scalar * 3) throw new InvalidOperationException("the triad computed a wrong value");
        double bytesPerSecond = 3.0 * sizeof(double) * n / best;
        _samples.Add(bytesPerSecond);
        return bytesPerSecond;
    }

    /// <summary>
    /// Runs <paramref name="measure"/> between two triads and returns its result with the higher of
    /// the two bandwidths: the roofline of what it timed, taken as the best the machine showed just
    /// then (the higher figure, so a row is never flattered by a triad that ran in a slow moment).
    /// </summary>
    public (T Result, double BytesPerSecond) Around<T>(Func<T> measure)
    {
        double before = Triad();
        var result = measure();
        return (result, Math.Max(before, Triad()));
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
