using System.Globalization;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.SpeCache;
using SpeCache.KvCache.Tiers;

namespace SpeCache.Eval;

/// <summary>
/// A KV cache policy and its settings written on one line, so one evaluation run can compare many:
/// <c>full</c>, <c>kivi:bits=2,group=32</c>, <c>specache:bits=1,group=64,k=8,miss=lowbit,spec=off</c>.
/// Keys: bits, group, residual, k, miss (fetch|lowbit), spec (on|off|auto), recall (on|off); for the
/// eviction baselines sinks, window and heavy; budget (bytes, e.g. 64KiB) for any policy.
/// </summary>
public static class PolicySpec
{
    public static KvCacheOptions Parse(string text)
    {
        string trimmed = text.Trim();
        int colon = trimmed.IndexOf(':');
        string name = colon < 0 ? trimmed : trimmed[..colon];
        if (!KvCacheFactory.Policies.Contains(name))
            throw new ArgumentException($"unknown KV cache policy '{name}' in '{text}' (available: {string.Join(", ", KvCacheFactory.Policies)})");
        var options = new KvCacheOptions { Policy = name };
        if (colon < 0) return options;

        var kivi = options.Kivi;
        var spe = options.SpeCache;
        var streaming = options.Streaming;
        var h2o = options.H2o;
        long? budget = null;
        foreach (string pair in trimmed[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"'{pair}' in '{text}' is not key=value");
            string key = pair[..eq].Trim(), value = pair[(eq + 1)..].Trim();
            switch (key)
            {
                case "bits": kivi = kivi with { Bits = Int(value, pair) }; spe = spe with { Bits = Int(value, pair) }; break;
                case "group": kivi = kivi with { GroupSize = Int(value, pair) }; spe = spe with { GroupSize = Int(value, pair) }; break;
                case "residual": kivi = kivi with { ResidualLength = Int(value, pair) }; spe = spe with { ResidualLength = Int(value, pair) }; break;
                case "k": spe = spe with { TopK = Int(value, pair) }; break;
                case "miss": spe = spe with { Miss = value == "lowbit" ? MissPolicy.LowBit : value == "fetch" ? MissPolicy.Fetch : throw new ArgumentException($"miss must be fetch or lowbit in '{text}'") }; break;
                case "spec": spe = spe with { Speculative = value == "auto" ? null : OnOff(value, pair) }; break;
                case "recall": spe = spe with { MeasureRecall = OnOff(value, pair) }; break;
                case "sinks": streaming = streaming with { Sinks = Int(value, pair) }; break;
                case "window": streaming = streaming with { Window = Int(value, pair) }; h2o = h2o with { Window = Int(value, pair) }; break;
                case "heavy": h2o = h2o with { HeavyHitters = Int(value, pair) }; break;
                case "budget":
                    try { budget = ByteSize.Parse(value); }
                    catch (FormatException e) { throw new ArgumentException($"{e.Message} in '{text}'"); }
                    break;
                default: throw new ArgumentException($"unknown setting '{key}' in '{text}' (bits, group, residual, k, miss, spec, recall, sinks, window, heavy, budget)");
            }
        }
        if (name == "kivi") kivi.Validate();
        if (name == "specache") spe.Validate();
        if (name == "streaming") streaming.Validate();
        if (name == "h2o") h2o.Validate();
        return options with { Kivi = kivi, SpeCache = spe, Streaming = streaming, H2o = h2o, FastTierBudgetBytes = budget };
    }

    /// <summary>A short label that says what differs from the defaults, for tables and plots.</summary>
    public static string Label(KvCacheOptions options) => options.Policy switch
    {
        "kivi" => $"kivi {options.Kivi.Bits}-bit g{options.Kivi.GroupSize} r{options.Kivi.ResidualLength}",
        "specache" => $"specache {options.SpeCache.Bits}-bit g{options.SpeCache.GroupSize} k{options.SpeCache.TopK}"
            + (options.SpeCache.Speculative switch { true => " spec", false => " no-spec", null => "" }) + (options.SpeCache.Miss == MissPolicy.LowBit ? " lowbit-miss" : ""),
        "streaming" => options.FastTierBudgetBytes is long b ? $"streaming {ByteSize.Format(b)}" : $"streaming s{options.Streaming.Sinks} w{options.Streaming.Window}",
        "h2o" => options.FastTierBudgetBytes is long b ? $"h2o {ByteSize.Format(b)}" : $"h2o w{options.H2o.Window} h{options.H2o.HeavyHitters}",
        _ => options.Policy,
    };

    static int Int(string value, string pair) =>
        int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) ? n : throw new ArgumentException($"'{pair}' needs a whole number");

    static bool OnOff(string value, string pair) => value switch
    {
        "on" or "true" or "1" => true,
        "off" or "false" or "0" => false,
        _ => throw new ArgumentException($"'{pair}' needs on or off"),
    };
}
