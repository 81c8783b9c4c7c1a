using System.Diagnostics;

namespace SpeCache.KvCache.Tiers;

/// <summary>
/// A model of the link between the host tier and the fast tier (PCIe in the paper): each transfer
/// takes <c>latency + bytes / bandwidth</c>. On a CPU machine both tiers are RAM and a copy is almost
/// free, so without this the overlap SpeCache's prefetch buys would be invisible; with it, a transfer
/// does not complete before the modelled time has passed since it started. Unlimited by default.
/// </summary>
public sealed record Interconnect(double BytesPerSecond = double.PositiveInfinity, TimeSpan Latency = default)
{
    /// <summary>No throttle: a transfer takes as long as the copy.</summary>
    public static Interconnect Unlimited { get; } = new();

    /// <summary>PCIe 4.0 x16 as seen by a GPU copy engine: about 25 GB/s, about 10 microseconds per transfer.</summary>
    public static Interconnect Pcie4 { get; } = new(25e9, TimeSpan.FromMicroseconds(10));

    public bool IsUnlimited => double.IsPositiveInfinity(BytesPerSecond) && Latency == TimeSpan.Zero;

    /// <summary>How long moving <paramref name="bytes"/> takes on this link.</summary>
    public TimeSpan TransferTime(long bytes) => IsUnlimited
        ? TimeSpan.Zero
        : Latency + TimeSpan.FromSeconds(bytes / BytesPerSecond);

    /// <summary>
    /// Blocks until a transfer of <paramref name="bytes"/> that started at <paramref name="startTimestamp"/>
    /// (a <see cref="Stopwatch"/> timestamp, taken before the copy) would have completed.
    /// </summary>
    public void WaitForTransfer(long bytes, long startTimestamp)
    {
        if (IsUnlimited) return;
        long due = startTimestamp + (long)(TransferTime(bytes).TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            long left = due - Stopwatch.GetTimestamp();
            if (left <= 0) return;
            // Sleep through the long part; yield (not spin) for the rest, because the compute threads
            // need the cores this waiting thread would burn.
            if (left > Stopwatch.Frequency / 500) Thread.Sleep(1);
            else Thread.Yield();
        }
    }

    /// <summary>Parses "25GB/s"-style bandwidths (B, KB, MB, GB with /s; binary KiB, MiB, GiB too).</summary>
    public static double ParseBandwidth(string text)
    {
        string t = text.Trim();
        if (t.EndsWith("/s", StringComparison.OrdinalIgnoreCase)) t = t[..^2];
        long bytes = ByteSize.Parse(t);
        if (bytes <= 0) throw new FormatException($"bandwidth '{text}' must be positive");
        return bytes;
    }

    /// <summary>Parses "10us", "2ms", "0.5s" or a bare number of microseconds.</summary>
    public static TimeSpan ParseLatency(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        (string number, double toSeconds) = t.EndsWith("us") ? (t[..^2], 1e-6)
            : t.EndsWith("ms") ? (t[..^2], 1e-3)
            : t.EndsWith("ns") ? (t[..^2], 1e-9)
            : t.EndsWith('s') ? (t[..^1], 1.0)
            : (t, 1e-6);
        if (!double.TryParse(number, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value) || value < 0 || double.IsInfinity(value))
            throw new FormatException($"latency '{text}' is not a duration such as 10us, 2ms or 0.5s");
        return TimeSpan.FromTicks((long)Math.Round(value * toSeconds * TimeSpan.TicksPerSecond));
    }
}
