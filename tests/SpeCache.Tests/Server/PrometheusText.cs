using System.Globalization;
using System.Text.RegularExpressions;

namespace SpeCache.Tests.Server;

/// <summary>A strict reader of Prometheus' text exposition format (0.0.4), enough to check ours.</summary>
public static partial class PrometheusText
{
    [GeneratedRegex(@"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$")]
    private static partial Regex Comment();

    [GeneratedRegex(@"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*=""[^""]*""(,[a-zA-Z_][a-zA-Z0-9_]*=""[^""]*"")*\})? (\S+)$")]
    private static partial Regex Sample();

    public static Dictionary<string, double> Parse(string text)
    {
        Assert.EndsWith("\n", text);
        var types = new Dictionary<string, string>();
        var samples = new Dictionary<string, double>();
        foreach (string line in text.TrimEnd('\n').Split('\n'))
        {
            var comment = Comment().Match(line);
            if (comment.Success)
            {
                if (comment.Groups[1].Value == "TYPE")
                {
                    Assert.Contains(comment.Groups[3].Value, new[] { "counter", "gauge", "histogram", "summary", "untyped" });
                    types[comment.Groups[2].Value] = comment.Groups[3].Value;
                }
                continue;
            }
            var sample = Sample().Match(line);
            Assert.True(sample.Success, $"not a Prometheus sample line: '{line}'");
            string name = sample.Groups[1].Value;
            Assert.True(types.ContainsKey(name), $"sample {name} has no TYPE line before it");
            if (types[name] == "counter") Assert.EndsWith("_total", name);
            Assert.True(double.TryParse(sample.Groups[4].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double value), line);
            samples[name + sample.Groups[2].Value] = value;
        }
        return samples;
    }
}
