using System.Globalization;

namespace SpeCache.KvCache.Tiers;

/// <summary>Byte counts as people write them: 512, 64KB, 1.5GiB (KB/MB/GB are powers of 1000; KiB/MiB/GiB and bare K/M/G of 1024).</summary>
public static class ByteSize
{
    public static long Parse(string text)
    {
        string t = text.Trim();
        int unitAt = t.Length;
        while (unitAt > 0 && char.IsLetter(t[unitAt - 1])) unitAt--;
        if (unitAt == 0) throw NotASize(text);
        string unit = t[unitAt..].ToUpperInvariant();
        double multiplier = unit switch
        {
            "" or "B" => 1,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "TB" => 1e12,
            "K" or "KIB" => 1L << 10,
            "M" or "MIB" => 1L << 20,
            "G" or "GIB" => 1L << 30,
            "T" or "TIB" => 1L << 40,
            _ => throw NotASize(text),
        };
        if (!double.TryParse(t[..unitAt], NumberStyles.AllowDecimalPoint | NumberStyles.AllowTrailingWhite, CultureInfo.InvariantCulture, out double value))
            throw NotASize(text);
        double bytes = Math.Floor(value * multiplier);
        if (bytes < 1 || bytes > long.MaxValue) throw NotASize(text);
        return (long)bytes;
    }

    static FormatException NotASize(string text) => new($"'{text}' is not a positive byte count (e.g. 65536, 512KB, 64MiB, 2GiB)");

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
