using System.Globalization;
using System.Text;
using System.Text.Json;
using SpeCache.Eval;
using SpeCache.KvCache.Tiers;

namespace SpeCache.Cli;

/// <summary>How evaluation reports are written: JSON (snake_case, indented, round-trippable) and Markdown tables.</summary>
static class EvalReports
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Markdown(FidelityReport report)
    {
        var md = new StringBuilder();
        md.AppendLine(Inv, $"# Fidelity against the full cache: {report.Model}");
        md.AppendLine();
        md.AppendLine(Inv, $"{report.PrefillTokens} tokens prefilled, {report.DecodeSteps} decode steps teacher-forced; full-cache perplexity {report.ReferencePerplexity:F3}.");
        md.AppendLine();
        md.AppendLine("| policy | fast tier | host tier | mean KL | max KL | top-1 agreement | perplexity | top-k recall | prefetch hits | spec. accuracy |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in report.Policies)
            md.AppendLine(Inv, $"| {r.Label} | {ByteSize.Format(r.FastTierBytes)} | {ByteSize.Format(r.HostTierBytes)} | {r.MeanKl:E2} | {r.MaxKl:E2} | {r.Top1Agreement:P1} | {r.Perplexity:F3} | {Percent(r.TopKRecall)} | {Percent(r.PrefetchHitRate)} | {Percent(r.SpeculativeAccuracy)} |");
        if (report.Policies.Count == 0) return md.ToString();

        int layers = report.Policies[0].AttentionErrorPerLayer.Length;
        md.AppendLine();
        md.AppendLine("Attention-output relative error per layer, ||out(policy) - out(full)|| / ||out(full)||, mean over decode steps (max in the last column), every layer on the full cache's hidden states:");
        md.AppendLine();
        md.AppendLine("| policy | " + string.Join(" | ", Enumerable.Range(0, layers).Select(l => $"L{l}")) + " | max |");
        md.AppendLine("|---|" + string.Concat(Enumerable.Repeat("---:|", layers + 1)));
        foreach (var r in report.Policies)
            md.AppendLine(Inv, $"| {r.Label} | {string.Join(" | ", r.AttentionErrorPerLayer.Select(e => e.ToString("E2", Inv)))} | {r.MaxAttentionErrorPerLayer.DefaultIfEmpty(0).Max():E2} |");
        return md.ToString();
    }

    public static string Markdown(RetrievalSuite suite)
    {
        var md = new StringBuilder();
        md.AppendLine(Inv, $"# Retrieval: {suite.Model}");
        foreach (var report in suite.Tasks)
        {
            md.AppendLine();
            md.AppendLine(Inv, $"## {report.Task}");
            md.AppendLine();
            string what = report.Task switch
            {
                "multivalue" => $"one key holds {report.Values} values, all must rank above every other token; {report.Distractors} distractor pairs",
                "multikey" => $"{report.Distractors} distractor pairs of other keys",
                "vt" => $"variable tracking: a chain of {report.Hops} links from a pair to the asked key, among {report.Distractors} distractor chains",
                _ => "one needle in filler",
            };
            md.AppendLine(Inv, $"{report.SamplesPerCell} questions per cell, {what}; accuracy in %, per context length (averaged over depths {string.Join(", ", report.Depths.Select(d => d.ToString(Inv)))}).");
            md.AppendLine();
            md.AppendLine("| policy | fast tier | host tier | " + string.Join(" | ", report.Lengths.Select(l => l.ToString(Inv))) + " | all |");
            md.AppendLine("|---|---:|---:|" + string.Concat(report.Lengths.Select(_ => "---:|")) + "---:|");
            foreach (var p in report.Policies)
            {
                var perLength = report.Lengths.Select(l => p.Cells.Where(c => c.Length == l).Average(c => c.Accuracy).ToString("F1", Inv));
                md.AppendLine(Inv, $"| {p.Label} | {ByteSize.Format(p.FastTierBytes)} | {ByteSize.Format(p.HostTierBytes)} | {string.Join(" | ", perLength)} | {p.Accuracy:F1} |");
            }
        }
        return md.ToString();
    }

    static string Percent(double? value) => value is double v ? v.ToString("P1", Inv) : "-";
}
