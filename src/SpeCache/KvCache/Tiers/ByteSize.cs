using System.Globalization;

namespace SpeCache.KvCache.Tiers;

/// <summary>Byte counts as people write them: 512, 64KB, 1.5GiB (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).</summary>
public static class ByteSize
{
    public static long Parse(string text)
    {
        string t = text.Trim();
        int unitAt = t.Length;
        while (unitAt > 0 && char.IsLetter(t[unitAt - 1])) unitAt--;
        if (unitAt == 0) throw new FormatException($"'{text}' is not a size such as 512MiB or 2GB");
        string unit = t[unitAt..].ToUpperInvariant();
        double multiplier = unit switch
        {
            "" or "B" => 1,
            "K" or "KB" => 1e3,
            "M" or "MB" => 1e6,
            "G" or "GB" => 1e9,
            "T" or "TB" => 1e12,
            "KIB" => 1L << 10,
            "MIB" => 1L << 20,
            "GIB" => 1L << 30,
            "TIB" => 1L << 40,
            _ => throw new FormatException($"'{text}' has an unknown unit '{t[unitAt..]}' (use B, KB, MB, GB, KiB, MiB or GiB)"),
        };
        if (!double.TryParse(t[..unitAt], NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || value < 0 || double.IsInfinity(value) || double.IsNaN(value))
            throw new FormatException($"'{text}' is not a size such as 512MiB or 2GB");
        double bytes = value * multiplier;
        if (bytes > long.MaxValue) throw new FormatException($"'{text}' is too large");
        return (long)bytes;
    }

    /// <summary>Formats with a binary unit: 1.50 GiB.</summary>
    public static string Format(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        int unit = 0;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return unit == 0 ? $"{bytes} B" : string.Create(CultureInfo.InvariantCulture, $"{value:0.##} {units[unit]}");
    }
}
