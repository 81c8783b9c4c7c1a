using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache.Tiers;

namespace SpeCache.Cli.Commands;

/// <summary><c>specache eval</c>: what each KV cache policy costs in accuracy, measured against the full cache.</summary>
static class EvalCommand
{
    public static Command Create()
    {
        var command = new Command("eval", "Measure KV cache policies' accuracy against the full cache.");
        command.Subcommands.Add(Fidelity());
        command.Subcommands.Add(Niah());
        return command;
    }

    static Command Fidelity()
    {
        var common = new CommonOptions();
        var text = new Option<string?>("--text") { Description = "Text file to evaluate on (default: a text sampled from the model itself with seed 0)." };
        var prefill = new Option<int>("--prefill") { Description = "Tokens of the text prefilled before decoding starts.", DefaultValueFactory = _ => 128 };
        var steps = new Option<int>("--steps") { Description = "Decode steps compared (teacher-forced on the text).", DefaultValueFactory = _ => 256 };
        var policies = new Option<string[]>("--policy") { Description = "A policy to compare, e.g. kivi:bits=2 or specache:bits=1,group=64,k=8 (repeat; default: a standard set).", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Folder for the JSON and Markdown reports and the PNG plots.", DefaultValueFactory = _ => "eval-results" };

        var command = new Command("fidelity", "Per decode step KL divergence, top-1 agreement and perplexity of each policy against the full cache.");
        common.AddTo(command);
        command.Options.Add(text);
        command.Options.Add(prefill);
        command.Options.Add(steps);
        command.Options.Add(policies);
        command.Options.Add(output);
        command.SetAction(result => CliErrors.Run(() =>
        {
            int p = result.GetValue(prefill), n = result.GetValue(steps);
            if (p < 1 || n < 1) throw new ArgumentException("--prefill and --steps must be positive");
            string[] specs = result.GetValue(policies) is { Length: > 0 } given ? given : DefaultPolicies;
            foreach (string spec in specs) PolicySpec.Parse(spec); // bad specs fail before the model loads
            string outDir = result.GetValue(output)!;

            using var engine = common.LoadEngine(result);
            int[] tokens = result.GetValue(text) is string path
                ? engine.Encode(File.ReadAllText(path))
                : SampleText(engine, p + n);
            string modelName = Path.GetFileName(common.ModelPath(result).TrimEnd('/'));
            var report = Progress.Bars(bar => FidelityEval.Run(engine.Model, modelName, tokens, p, n, engine.ContextLength, specs, bar));

            Directory.CreateDirectory(outDir);
            string json = Path.Combine(outDir, "fidelity.json");
            File.WriteAllText(json, JsonSerializer.Serialize(report, ReportJson.Options) + "\n");
            string markdown = Path.Combine(outDir, "fidelity.md");
            File.WriteAllText(markdown, ToMarkdown(report));
            string klPlot = Path.Combine(outDir, "fidelity-kl.png");
            string bytesPlot = Path.Combine(outDir, "fidelity-kl-vs-bytes.png");
            Plots.KlPerStep(report, klPlot);
            Plots.KlVersusBytes(report, bytesPlot);
            Console.Out.Write(ToMarkdown(report));
            Console.Error.WriteLine($"wrote {json}, {markdown}, {klPlot}, {bytesPlot}");
            return 0;
        }));
        return command;
    }

    static Command Niah()
    {
        var common = new CommonOptions();
        var lengths = new Option<string>("--lengths") { Description = "Context lengths, comma-separated.", DefaultValueFactory = _ => "1024,4096" };
        var depths = new Option<string>("--depths") { Description = "Needle depths from 0 to 1, comma-separated.", DefaultValueFactory = _ => "0,0.25,0.5,0.75,1" };
        var samples = new Option<int>("--samples") { Description = "Questions per length and depth.", DefaultValueFactory = _ => 4 };
        var distractors = new Option<int>("--distractors") { Description = "Other key-value pairs in the haystack (multi-key retrieval).", DefaultValueFactory = _ => 32 };
        var policies = new Option<string[]>("--policy") { Description = "A policy to compare (repeat; default: full, kivi and specache at 2 and 1 bit).", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Folder for the reports and heatmaps.", DefaultValueFactory = _ => "eval-results" };
        var similarity = new Option<double>("--key-similarity") { Description = "Constructed model: how much its keys share, 0 to 0.9 (harder for every policy).", DefaultValueFactory = _ => 0 };
        var command = new Command("niah", "Needle-in-a-haystack key-value retrieval per policy, on the constructed retrieval model (default) or --model.");
        common.AddTo(command);
        command.Options.Add(lengths);
        command.Options.Add(depths);
        command.Options.Add(samples);
        command.Options.Add(distractors);
        command.Options.Add(policies);
        command.Options.Add(output);
        command.Options.Add(similarity);
        command.SetAction(result => CliErrors.Run(() =>
        {
            int[] lengthList = ParseList(result.GetValue(lengths)!, int.Parse, "--lengths");
            double[] depthList = ParseList(result.GetValue(depths)!, s => double.Parse(s, CultureInfo.InvariantCulture), "--depths");
            string[] specs = result.GetValue(policies) is { Length: > 0 } given ? given : DefaultNiahPolicies;
            foreach (string spec in specs) PolicySpec.Parse(spec);
            if (result.GetValue(samples) < 1) throw new ArgumentException("--samples must be positive");
            string? constructed = null;
            if (result.GetValue(common.Model) == null)
            {
                // The constructed model, made on first use in the cache folder (never committed).
                double s = result.GetValue(similarity);
                if (s is < 0 or > 0.9) throw new ArgumentException("--key-similarity must be between 0 and 0.9");
                constructed = RetrievalModelPath(s);
                if (!File.Exists(constructed)) Progress.Run("Writing the constructed retrieval model", () => { RetrievalModel.Write(constructed, keySimilarity: s); return 0; });
            }
            using var engine = common.LoadEngine(result, constructed);
            string modelName = Path.GetFileName(constructed ?? common.ModelPath(result));
            var report = Progress.Bars(bar => RetrievalEval.Run(engine.Model, modelName, specs, lengthList, depthList,
                result.GetValue(samples), result.GetValue(distractors), bar));
            string outDir = result.GetValue(output)!;
            Directory.CreateDirectory(outDir);
            string json = Path.Combine(outDir, "niah.json"), markdown = Path.Combine(outDir, "niah.md");
            File.WriteAllText(json, JsonSerializer.Serialize(report, ReportJson.Options) + "\n");
            File.WriteAllText(markdown, NiahMarkdown(report));
            var pngs = report.Policies.Select(p => Plots.NiahHeatmap(report, p, Path.Combine(outDir, $"niah-{Slug(p.Label)}.png"))).ToList();
            Console.Out.Write(NiahMarkdown(report));
            Console.Error.WriteLine($"wrote {json}, {markdown}, {string.Join(", ", pngs)}");
            return 0;
        }));
        return command;
    }

    static readonly string[] DefaultNiahPolicies =
    [
        "full", "kivi:bits=2,group=32", "kivi:bits=1,group=64",
        "specache:bits=2,group=32,k=64", "specache:bits=1,group=64,k=64",
    ];

    static string RetrievalModelPath(double similarity)
    {
        string root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        string dir = Path.Combine(root, "specache", "models");
        Directory.CreateDirectory(dir);
        string suffix = similarity == 0 ? "" : $"-s{similarity.ToString("0.##", CultureInfo.InvariantCulture)}";
        return Path.Combine(dir, $"specache-retrieval-128k{suffix}.gguf");
    }

    static T[] ParseList<T>(string text, Func<string, T> parse, string option)
    {
        try { return [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(parse)]; }
        catch (FormatException) { throw new ArgumentException($"{option} must be a comma-separated list of numbers (got '{text}')"); }
    }

    static string Slug(string label) => string.Concat(label.Select(c => char.IsLetterOrDigit(c) ? c : '-'));

    static string NiahMarkdown(RetrievalReport report)
    {
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(inv, $"# Needle retrieval: {report.Model}");
        md.AppendLine();
        md.AppendLine(inv, $"{report.SamplesPerCell} questions per cell, {report.Distractors} distractor pairs; accuracy in %, per context length (averaged over depths {string.Join(", ", report.Depths.Select(d => d.ToString(inv)))}).");
        md.AppendLine();
        md.AppendLine("| policy | fast tier | host tier | " + string.Join(" | ", report.Lengths.Select(l => l.ToString(inv))) + " | all |");
        md.AppendLine("|---|---:|---:|" + string.Concat(report.Lengths.Select(_ => "---:|")) + "---:|");
        foreach (var p in report.Policies)
        {
            var perLength = report.Lengths.Select(l => p.Cells.Where(c => c.Length == l).Average(c => c.Accuracy).ToString("F1", inv));
            md.AppendLine(inv, $"| {p.Label} | {ByteSize.Format(p.FastTierBytes)} | {ByteSize.Format(p.HostTierBytes)} | {string.Join(" | ", perLength)} | {p.Accuracy:F1} |");
        }
        return md.ToString();
    }

    /// <summary>The comparison the paper makes, scaled to small models: KIVI and SpeCache at 2 and 1 bit, SpeCache at several k.</summary>
    static readonly string[] DefaultPolicies =
    [
        "kivi:bits=2,group=32", "kivi:bits=1,group=64",
        "specache:bits=2,group=32,k=8,recall=on,spec=on", "specache:bits=1,group=64,k=8,recall=on,spec=on",
        "specache:bits=1,group=64,k=32,recall=on,spec=on", "specache:bits=1,group=64,k=8,spec=off",
    ];

    /// <summary>A text drawn from the model itself (temperature 1, seed 0): in distribution, and not the greedy path every policy would agree on.</summary>
    static int[] SampleText(Engine engine, int length)
    {
        using var cache = engine.Options.KvCache.Policy == "full" ? engine.CreateCache() : SpeCache.KvCache.KvCacheFactory.Create(new(), engine.Config, engine.ContextLength);
        int[] start = engine.Encode("");
        if (start.Length == 0) throw new ArgumentException("give --text: the model has no BOS token to sample a text from");
        var stats = new GenerationStats();
        var options = new GenerationOptions
        {
            MaxTokens = length - start.Length,
            IgnoreEndOfGeneration = true,
            Sampling = new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = 0 },
        };
        foreach (var _ in engine.Generator.Generate(start, options, cache, stats)) { }
        return [.. start, .. stats.Tokens];
    }

    static string ToMarkdown(FidelityReport report)
    {
        var md = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine(inv, $"# Fidelity against the full cache: {report.Model}");
        md.AppendLine();
        md.AppendLine(inv, $"{report.PrefillTokens} tokens prefilled, {report.DecodeSteps} decode steps teacher-forced; full-cache perplexity {report.ReferencePerplexity:F3}.");
        md.AppendLine();
        md.AppendLine("| policy | fast tier | host tier | mean KL | max KL | top-1 agreement | perplexity | top-k recall | prefetch hits | spec. accuracy |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in report.Policies)
            md.AppendLine(inv, $"| {r.Label} | {ByteSize.Format(r.FastTierBytes)} | {ByteSize.Format(r.HostTierBytes)} | {r.MeanKl:E2} | {r.MaxKl:E2} | {r.Top1Agreement:P1} | {r.Perplexity:F3} | {Percent(r.TopKRecall)} | {Percent(r.PrefetchHitRate)} | {Percent(r.SpeculativeAccuracy)} |");
        return md.ToString();
    }

    static string Percent(double? value) => value is double v ? v.ToString("P1", CultureInfo.InvariantCulture) : "-";
}

/// <summary>How every report is written: snake_case names, indented, round-trippable.</summary>
static class ReportJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };
}

/// <summary>PNG plots of evaluation reports (ScottPlot).</summary>
static class Plots
{
    public static void KlPerStep(FidelityReport report, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in report.Policies)
        {
            var xs = Enumerable.Range(0, r.KlPerStep.Length).Select(i => (double)(report.PrefillTokens + i)).ToArray();
            // A floor keeps exact steps (KL 0) on the log scale.
            var ys = r.KlPerStep.Select(k => Math.Log10(Math.Max(k, 1e-9))).ToArray();
            var line = plot.Add.ScatterLine(xs, ys);
            line.LegendText = r.Label;
        }
        plot.Title($"KL(full || policy) per decode step, {report.Model}");
        plot.XLabel("position");
        plot.YLabel("log10 KL");
        plot.ShowLegend();
        plot.SavePng(path, 1000, 600);
    }

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
        plot.Title($"{policy.Label}: retrieval accuracy (%)");
        plot.XLabel("context length");
        plot.YLabel("needle depth");
        plot.SavePng(path, 700, 500);
        return path;
    }

    public static void KlVersusBytes(FidelityReport report, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in report.Policies)
        {
            var point = plot.Add.Scatter(new[] { r.FastTierBytes / 1024.0 }, new[] { Math.Log10(Math.Max(r.MeanKl, 1e-9)) });
            point.LegendText = r.Label;
            point.MarkerSize = 10;
        }
        plot.Title($"mean KL versus fast-tier memory, {report.Model}");
        plot.XLabel("fast tier (KiB)");
        plot.YLabel("log10 mean KL");
        plot.ShowLegend();
        plot.SavePng(path, 1000, 600);
    }
}
