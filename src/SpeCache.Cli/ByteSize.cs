using System.CommandLine.Parsing;
using System.Globalization;

namespace SpeCache.Cli;

/// <summary>Byte counts as people write them: 65536, 64KiB, 512KB, 1.5GiB (KB, MB, GB are powers of 1000; KiB, MiB, GiB and bare K, M, G of 1024).</summary>
static class ByteSize
{
    static readonly (string Suffix, long Factor)[] Units =
    [
        ("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("TiB", 1L << 40),
        ("KB", 1000L), ("MB", 1000_000L), ("GB", 1000_000_000L), ("TB", 1000_000_000_000L),
        ("K", 1L << 10), ("M", 1L << 20), ("G", 1L << 30), ("T", 1L << 40),
        ("B", 1L),
    ];

    /// <summary>The byte count, or null with <paramref name="error"/> saying why in one line.</summary>
    public static long? Parse(string text, out string? error)
    {
        error = null;
        string s = text.Trim();
        long factor = 1;
        foreach (var (suffix, f) in Units)
            if (s.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                s = s[..^suffix.Length].TrimEnd();
                factor = f;
                break;
            }
        if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal number) || number <= 0)
        {
            error = $"'{text}' is not a positive byte count (e.g. 65536, 512KB, 64MiB, 2GiB)";
            return null;
        }
        decimal bytes = decimal.Floor(number * factor);
        if (bytes > long.MaxValue || bytes < 1)
        {
            error = $"'{text}' is not a byte count between 1 and {long.MaxValue}";
            return null;
        }
        return (long)bytes;
    }

    /// <summary>For System.CommandLine: a bad value becomes a parse error (one line, exit code 2).</summary>
    public static long? ParseArgument(ArgumentResult result)
    {
        if (result.Tokens.Count == 0) return null;
        long? bytes = Parse(result.Tokens[0].Value, out string? error);
        if (error != null) result.AddError($"--kv-budget: {error}");
        return bytes;
    }
}
