using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SpeCache.KvCache.Tiers;

namespace SpeCache.Bench;

/// <summary>Writes a <see cref="BenchReport"/> as Markdown, JSON and a PNG plot of decode speed versus depth.</summary>
public static class ReportWriter
{
    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>
    /// Makes <paramref name="folder"/> and checks that files can be written in it, before a run that
    /// may take hours writes its reports there; throws a one-line <see cref="ArgumentException"/> if not.
    /// </summary>
    public static void PrepareFolder(string folder, string option = "--out")
    {
        try
        {
            Directory.CreateDirectory(folder);
            string probe = Path.Combine(folder, $".specache-write-check-{Environment.ProcessId}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new ArgumentException($"{option}: cannot write reports into '{folder}' ({e.Message.TrimEnd('.')})");
        }
    }

    /// <summary>Writes bench.md, bench.json and bench-decode.png into <paramref name="folder"/>; returns their paths.</summary>
    public static IReadOnlyList<string> WriteAll(BenchReport report, string folder) =>
        Write(folder, "bench", "bench-decode.png", Markdown(report), report, png => Plot(report, png));

    /// <summary>Writes <paramref name="stem"/>.md, <paramref name="stem"/>.json and the plot; returns their paths.</summary>
    static IReadOnlyList<string> Write<T>(string folder, string stem, string plotFile, string markdown, T report, Action<string> plot)
    {
        Directory.CreateDirectory(folder);
        string md = Path.Combine(folder, stem + ".md"), json = Path.Combine(folder, stem + ".json"), png = Path.Combine(folder, plotFile);
        // Each file whole or not at all: a run stopped while it rewrites its report keeps the last one.
        Replace(md, path => File.WriteAllText(path, markdown));
        Replace(json, path => File.WriteAllText(path, JsonSerializer.Serialize(report, Json)));
        Replace(png, plot);
        return [md, json, png];
    }

    /// <summary>Writes <paramref name="path"/> through a temporary file beside it, moved over it once written.</summary>
    static void Replace(string path, Action<string> write)
    {
        string temporary = Path.ChangeExtension(path, ".partial" + Path.GetExtension(path)); // the plot keeps its .png
        write(temporary);
        File.Move(temporary, path, overwrite: true);
    }

    public static string Markdown(BenchReport r)
    {
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(inv, $"# Bench: {r.Model}");
        md.AppendLine();
        if (!r.Complete)
        {
            md.AppendLine(inv, $"**Partial report**: written as each row was done; the run had not finished ({r.Rows.Count} rows so far).");
            md.AppendLine();
        }
        md.AppendLine(inv, $"{r.Date:yyyy-MM-dd HH:mm} UTC, {r.Machine}, {r.Threads} threads. Model file {r.ModelFile} ({r.ModelFileBytes / 1048576.0:F0} MiB).");
        md.AppendLine(inv, $"Prefill of {r.PromptTokens} random tokens, then {r.DecodeTokens} greedy decode steps, after the context is filled to each depth with random tokens.");
        if (r.TriadBytesPerSecond.Count > 0)
            md.AppendLine(inv, $"Memory bandwidth (STREAM triad, {r.Threads} threads, best of 5 each time), measured just before and just after each row's timed prefill and decode: {r.TriadBytesPerSecond.Min() / 1e9:F1}–{r.TriadBytesPerSecond.Max() / 1e9:F1} GB/s over the run (median {BenchCommand.Median(r.TriadBytesPerSecond) / 1e9:F1}, {r.TriadBytesPerSecond.Count} measurements).");
        if (r.WeightMemory != null) md.AppendLine(r.WeightMemory);
        if (r.ContextFill != null) md.AppendLine(r.ContextFill);
        md.AppendLine();
        md.AppendLine("Bytes/token = weight bytes + KV bytes read per decoded token. The KV part is an estimate: the cache's bytes per stored token (for our policies KvCacheFactory.FastTierBytesPerToken; for llama.cpp its K and V element size) times the mean context during decode. Read GB/s = decode tokens/s × bytes/token; roofline = that ÷ the STREAM column, the higher of the row's two triads" + (r.Rounds > 1 ? " (the highest of its rounds')." : "."));
        if (r.Baseline != null && r.Rows.Any(x => x.DecodeRatio != null))
            md.AppendLine(inv, $"Ratios are tokens/s over {r.Baseline} at the same depth.");
        else if (r.Baseline != null)
            md.AppendLine(inv, $"No ratios: the run measured no {r.Baseline} row.");
        bool rounds = r.Rounds > 1;
        if (rounds)
            md.AppendLine(inv, $"Every engine was measured in {r.Rounds} rounds, taking turns which went first; each figure is the median of its rounds, each ratio the median of the ratios within a round; the range column gives the slowest and fastest round's decode.");
        md.AppendLine();
        bool ratios = r.Rows.Any(x => x.DecodeRatio != null);
        md.AppendLine("| engine | KV | depth | prefill tok/s | decode tok/s |" + (rounds ? " decode range |" : "") + " MB/token (weights + KV) | read GB/s | STREAM GB/s | roofline |" + (ratios ? " prefill ratio | decode ratio |" : ""));
        md.AppendLine("|---|---|---:|---:|---:|" + (rounds ? "---:|" : "") + "---:|---:|---:|---:|" + (ratios ? "---:|---:|" : ""));
        foreach (var x in r.Rows.OrderBy(x => x.Depth).ThenBy(x => x.Engine).ThenBy(x => x.Kv))
        {
            md.Append(inv, $"| {x.Engine} | {x.Kv} | {x.Depth} | {x.PrefillTokensPerSecond:F1} | {x.DecodeTokensPerSecond:F2} |");
            if (rounds) md.Append(inv, $" {x.DecodeTokensPerSecondByRound?.Min():F2}–{x.DecodeTokensPerSecondByRound?.Max():F2} |");
            md.Append(inv, $" {x.BytesPerToken / 1e6:F1} ({x.WeightBytesPerToken / 1e6:F1} + {x.KvBytesPerToken / 1e6:F1}) | {x.ReadBytesPerSecond / 1e9:F1} | {x.BandwidthBytesPerSecond / 1e9:F1} | {x.RooflineFraction:P0} |");
            if (ratios) md.Append(inv, $" {Ratio(x.PrefillRatio)} | {Ratio(x.DecodeRatio)} |");
            md.AppendLine();
        }
        return md.ToString();
    }

    static string Ratio(double? ratio) => ratio is { } v ? v.ToString("F2", CultureInfo.InvariantCulture) : "";

    public static void Plot(BenchReport r, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var series in r.Rows.GroupBy(x => x.Series))
        {
            var points = series.OrderBy(x => x.Depth).ToArray();
            var line = plot.Add.Scatter(points.Select(x => (double)x.Depth).ToArray(), points.Select(x => x.DecodeTokensPerSecond).ToArray());
            line.LegendText = series.Key;
            line.MarkerSize = 7;
        }
        plot.Title($"{r.Model}: decode speed vs context depth ({r.Threads} threads)");
        plot.XLabel("context depth (tokens)");
        plot.YLabel("decode tokens/s");
        plot.Axes.SetLimitsY(0, Math.Max(1e-9, r.Rows.Max(x => x.DecodeTokensPerSecond)) * 1.1);
        plot.ShowLegend();
        plot.SavePng(path, 900, 560);
    }

    /// <summary>Writes batch.md, batch.json and batch-throughput.png into <paramref name="folder"/>; returns their paths.</summary>
    public static IReadOnlyList<string> WriteAll(BatchReport report, string folder) =>
        Write(folder, "batch", "batch-throughput.png", Markdown(report), report, png => Plot(report, png));

    public static string Markdown(BatchReport r)
    {
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(inv, $"# Batch throughput: {r.Model}");
        md.AppendLine();
        md.AppendLine(inv, $"{r.Date:yyyy-MM-dd HH:mm} UTC, {r.Machine}, {r.Threads} threads.");
        md.AppendLine(inv, $"Fast-tier budget {ByteSize.Format(r.FastTierBudgetBytes)} shared by every sequence's KV cache; each sequence holds a {r.Context:N0}-token context and decodes {r.DecodeTokens} greedy tokens; all sequences of a batch decode together, one forward pass per step.");
        md.AppendLine();
        md.AppendLine("| KV policy | fast tier / sequence | host tier / sequence | max batch | tokens/s | step ms | ratio to full |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (var x in r.Rows)
            md.AppendLine(inv, $"| {x.Policy} | {ByteSize.Format(x.FastTierBytesPerSequence)} | {ByteSize.Format(x.HostTierBytesPerSequence)} | {x.MaxBatch} | {x.TokensPerSecond:F2} | {x.StepMilliseconds:F0} | {Ratio(x.RatioToFull)} |");
        return md.ToString();
    }

    public static void Plot(BatchReport r, string path)
    {
        var plot = new ScottPlot.Plot();
        for (int i = 0; i < r.Rows.Count; i++)
        {
            var bar = plot.Add.Bar(i, r.Rows[i].TokensPerSecond);
            bar.LegendText = $"{r.Rows[i].Policy} (batch {r.Rows[i].MaxBatch})";
            bar.Color = ScottPlot.Palette.Default.GetColor(i);
        }
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, r.Rows.Count).Select(i => (double)i).ToArray(), r.Rows.Select(x => x.Policy).ToArray());
        plot.Title($"{r.Model}: tokens/s at a {ByteSize.Format(r.FastTierBudgetBytes)} fast-tier budget, {r.Context:N0}-token context");
        plot.YLabel("tokens/s (whole batch)");
        plot.Axes.SetLimitsY(0, Math.Max(1e-9, r.Rows.Max(x => x.TokensPerSecond)) * 1.15);
        plot.ShowLegend();
        plot.SavePng(path, 900, 560);
    }
}
