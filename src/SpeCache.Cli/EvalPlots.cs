using System.Globalization;
using System.Text.RegularExpressions;
using SpeCache.Eval;

namespace SpeCache.Cli;

/// <summary>PNG plots of evaluation reports (ScottPlot). Each returns the path it wrote.</summary>
static partial class EvalPlots
{
    /// <summary>Exact results (KL or error 0) are drawn at this floor so they stay on the log scale.</summary>
    const double LogFloor = 1e-9;

    static double Log(double value) => Math.Log10(Math.Max(value, LogFloor));

    public static string KlPerStep(FidelityReport report, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in report.Policies)
        {
            var xs = Enumerable.Range(0, r.KlPerStep.Length).Select(i => (double)(report.PrefillTokens + i)).ToArray();
            double[] kl = [.. r.KlPerStep.Select(Log)];
            var line = plot.Add.ScatterLine(xs, kl);
            line.LegendText = r.Label;
        }
        return Finish(plot, $"KL(full || policy) per decode step, {report.Model}", "position", "log10 KL", path);
    }

    public static string KlVersusBytes(FidelityReport report, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in report.Policies)
            Point(plot, r.FastTierBytes / 1024.0, Log(r.MeanKl), r.Label);
        return Finish(plot, $"mean KL versus fast-tier memory, {report.Model}", "fast tier (KiB)", "log10 mean KL", path);
    }

    /// <summary>Mean attention-output relative error against layer, one line per policy.</summary>
    public static string AttentionErrorPerLayer(FidelityReport report, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in report.Policies)
        {
            double[] layers = [.. Enumerable.Range(0, r.AttentionErrorPerLayer.Length).Select(l => (double)l)], errors = [.. r.AttentionErrorPerLayer.Select(Log)];
            var line = plot.Add.Scatter(layers, errors);
            line.LegendText = r.Label;
            line.MarkerSize = 7;
        }
        int layerCount = report.Policies.Count == 0 ? 0 : report.Policies[0].AttentionErrorPerLayer.Length;
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, layerCount).Select(l => (double)l)], [.. Enumerable.Range(0, layerCount).Select(l => l.ToString(CultureInfo.InvariantCulture))]);
        return Finish(plot, $"attention-output relative error per layer, {report.Model}", "layer", "log10 mean ||out - out_full|| / ||out_full||", path);
    }

    /// <summary>
    /// Mean KL against specache's k, one line per specache setting that differs only in k (1 and 2
    /// bit in the default set); null when the report has no specache policy.
    /// </summary>
    public static string? KlVersusK(FidelityReport report, string path)
    {
        var curves = report.Policies
            .Select(r => (Row: r, Options: PolicySpec.Parse(r.Spec)))
            .Where(p => p.Options.Policy == "specache")
            .GroupBy(p => KToken().Replace(p.Row.Label, ""))
            .ToList();
        if (curves.Count == 0) return null;
        var plot = new ScottPlot.Plot();
        foreach (var curve in curves)
        {
            var points = curve.OrderBy(p => p.Options.SpeCache.TopK).ToList();
            double[] ks = [.. points.Select(p => (double)p.Options.SpeCache.TopK)], kl = [.. points.Select(p => Log(p.Row.MeanKl))];
            var line = plot.Add.Scatter(ks, kl);
            line.LegendText = curve.Key;
            line.MarkerSize = 7;
        }
        var allK = curves.SelectMany(c => c.Select(p => p.Options.SpeCache.TopK)).Distinct().Order().ToList();
        plot.Axes.Bottom.SetTicks([.. allK.Select(k => (double)k)], [.. allK.Select(k => k.ToString(CultureInfo.InvariantCulture))]);
        return Finish(plot, $"mean KL versus k (16-bit pairs per step), {report.Model}", "k", "log10 mean KL", path);
    }

    /// <summary>A policy label without its " k8" part: the name of its KL-versus-k curve.</summary>
    [GeneratedRegex(@" k\d+")]
    private static partial Regex KToken();

    /// <summary>Accuracy by depth (rows) and length (columns), one heatmap per policy.</summary>
    public static string NiahHeatmap(RetrievalReport report, RetrievalPolicyResult policy, string path)
    {
        var grid = new double[report.Depths.Length, report.Lengths.Length];
        foreach (var cell in policy.Cells)
            grid[report.Depths.Length - 1 - Array.IndexOf(report.Depths, cell.Depth), Array.IndexOf(report.Lengths, cell.Length)] = cell.Accuracy;
        var plot = new ScottPlot.Plot();
        var map = plot.Add.Heatmap(grid);
        map.Colormap = new ScottPlot.Colormaps.Viridis();
        map.ManualRange = new ScottPlot.Range(0, 100);
        plot.Add.ColorBar(map);
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, report.Lengths.Length).Select(i => (double)i)], [.. report.Lengths.Select(l => l.ToString(CultureInfo.InvariantCulture))]);
        plot.Axes.Left.SetTicks([.. Enumerable.Range(0, report.Depths.Length).Select(i => (double)i)], [.. report.Depths.Select(d => d.ToString("0.##", CultureInfo.InvariantCulture))]);
        plot.Title($"{report.Task}, {policy.Label}: retrieval accuracy (%)");
        plot.XLabel("context length");
        plot.YLabel("needle depth");
        plot.SavePng(path, 700, 500);
        return path;
    }

    /// <summary>Accuracy over the whole task against the fast-tier bytes each policy held, one point per policy.</summary>
    public static string AccuracyVersusBytes(RetrievalReport report, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var p in report.Policies)
            Point(plot, p.FastTierBytes / 1024.0, p.Accuracy, p.Label);
        plot.Axes.SetLimitsY(-5, 105);
        return Finish(plot, $"{report.Task}: accuracy versus fast-tier memory, {report.Model}", "fast tier (KiB)", "accuracy (%)", path);
    }

    static void Point(ScottPlot.Plot plot, double x, double y, string label)
    {
        var point = plot.Add.Scatter(new[] { x }, new[] { y });
        point.LegendText = label;
        point.MarkerSize = 10;
    }

    /// <summary>Titles, axis labels, the legend beside the plot (many policies would hide the data), and the PNG.</summary>
    static string Finish(ScottPlot.Plot plot, string title, string xLabel, string yLabel, string path)
    {
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Edge.Right);
        plot.SavePng(path, 1000, 600);
        return path;
    }
}
