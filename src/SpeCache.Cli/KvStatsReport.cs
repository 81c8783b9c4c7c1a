using System.Text.Json;
using SpeCache.KvCache;
using SpeCache.KvCache.Tiers;

namespace SpeCache.Cli;

/// <summary><c>--stats</c> and <c>--stats-json</c>: what the KV cache held and moved, printed on stderr or saved as JSON.</summary>
static class KvStatsReport
{
    public static Dictionary<string, object?> Collect(string policy, IKvCache cache)
    {
        var memory = cache.Memory;
        var report = new Dictionary<string, object?>
        {
            ["policy"] = policy,
            ["tokens"] = cache.Length,
            ["fast_tier_bytes"] = memory.FastTierBytes,
            ["host_tier_bytes"] = memory.HostTierBytes,
        };
        if (cache.Counters is { } c)
        {
            report["decode_steps"] = c.DecodeSteps;
            report["fast_tier_bytes_read_per_step"] = Finite(c.FastBytesPerStep);
            report["host_tier_bytes_read_per_step"] = Finite(c.HostBytesPerStep);
            report["host_tier_bytes_written"] = c.HostBytesWritten;
            report["topk_requested"] = c.TopKRequested;
            report["prefetch_hits"] = c.PrefetchHits;
            report["misses"] = c.Misses;
            report["misses_served_low_bit"] = c.MissesServedLowBit;
            report["prefetch_hit_rate"] = Finite(c.PrefetchHitRate);
            report["prefetch_seconds"] = c.PrefetchTime.TotalSeconds;
            report["prefetch_wait_seconds"] = c.PrefetchWaitTime.TotalSeconds;
            report["prefetch_hidden_fraction"] = Finite(c.HiddenFraction);
            report["on_demand_fetch_seconds"] = c.OnDemandTime.TotalSeconds;
            report["topk_recall"] = Finite(c.TopKRecall);
            report["speculative_tokens"] = c.SpeculativeGuesses;
            report["speculative_accuracy"] = Finite(c.SpeculativeAccuracy);
        }
        return report;
    }

    static double? Finite(double value) => double.IsFinite(value) ? value : null;

    public static void Print(Dictionary<string, object?> report, TextWriter writer)
    {
        writer.WriteLine($"kv cache {report["policy"]}: {report["tokens"]} tokens, fast tier {ByteSize.Format((long)report["fast_tier_bytes"]!)}, host tier {ByteSize.Format((long)report["host_tier_bytes"]!)}");
        foreach (var (key, value) in report)
        {
            if (key is "policy" or "tokens" or "fast_tier_bytes" or "host_tier_bytes") continue;
            string text = value switch
            {
                null => "n/a",
                double d => d.ToString("G4", System.Globalization.CultureInfo.InvariantCulture),
                _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "",
            };
            writer.WriteLine($"  {key,-32} {text}");
        }
    }

    public static void Save(Dictionary<string, object?> report, string path) =>
        File.WriteAllText(path, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }) + "\n");
}
