using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using SpeCache.Eval;
using SpeCache.Generation;

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
        var policies = new Option<string[]>("--policy") { Description = "A policy to compare, e.g. kivi:bits=2 or specache:bits=1,group=64,k=8 (repeat; default: kivi, specache at 1 and 2 bits and k = 4, 8, 32, and streaming/h2o with specache 1-bit's fast-tier bytes).", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Folder for the JSON and Markdown reports and the PNG plots.", DefaultValueFactory = _ => "eval-results" };

        var command = new Command("fidelity", "Per decode step KL divergence, top-1 agreement, perplexity and per-layer attention-output error of each policy against the full cache.");
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
            string[]? given = result.GetValue(policies) is { Length: > 0 } g ? g : null;
            foreach (string spec in given ?? []) PolicySpec.Parse(spec); // bad specs fail before the model loads
            string outDir = result.GetValue(output)!;
            SpeCache.Bench.ReportWriter.PrepareFolder(outDir); // before the run, not after it

            using var engine = common.LoadEngine(result);
            var specs = given ?? EvalPolicies.Fidelity(engine.Config, engine.ContextLength);
            int[] tokens = result.GetValue(text) is string path
                ? engine.Encode(File.ReadAllText(path))
                : SampleText(engine, p + n);
            string modelName = Path.GetFileName(common.ModelPath(result).TrimEnd('/'));
            var report = Progress.Bars(bar => FidelityEval.Run(engine.Model, modelName, tokens, p, n, engine.ContextLength, specs, bar));

            var written = new List<string> { Path.Combine(outDir, "fidelity.json"), Path.Combine(outDir, "fidelity.md") };
            File.WriteAllText(written[0], JsonSerializer.Serialize(report, EvalReports.Json) + "\n");
            File.WriteAllText(written[1], EvalReports.Markdown(report));
            written.Add(EvalPlots.KlPerStep(report, Path.Combine(outDir, "fidelity-kl.png")));
            written.Add(EvalPlots.KlVersusBytes(report, Path.Combine(outDir, "fidelity-kl-vs-bytes.png")));
            written.Add(EvalPlots.AttentionErrorPerLayer(report, Path.Combine(outDir, "fidelity-attention-error.png")));
            if (EvalPlots.KlVersusK(report, Path.Combine(outDir, "fidelity-kl-vs-k.png")) is string klVersusK) written.Add(klVersusK);
            Console.Out.Write(EvalReports.Markdown(report));
            Console.Error.WriteLine($"wrote {string.Join(", ", written)}");
            return 0;
        }));
        return command;
    }

    static Command Niah()
    {
        var common = new CommonOptions();
        var tasks = new Option<string>("--tasks") { Description = "Retrieval tasks, comma-separated: single (one needle), multikey (the needle among --distractors pairs of other keys), multivalue (one key with --values values, all must be returned), vt (variable tracking: a chain of --hops links among --chains other chains).", DefaultValueFactory = _ => "single,multikey,multivalue" };
        var lengths = new Option<string>("--lengths") { Description = "Context lengths, comma-separated.", DefaultValueFactory = _ => "1024,4096" };
        var depths = new Option<string>("--depths") { Description = "Needle depths from 0 to 1, comma-separated.", DefaultValueFactory = _ => "0,0.25,0.5,0.75,1" };
        var samples = new Option<int>("--samples") { Description = "Questions per length and depth.", DefaultValueFactory = _ => 4 };
        var distractors = new Option<int>("--distractors") { Description = "multikey, multivalue: other key-value pairs in the haystack.", DefaultValueFactory = _ => 32 };
        var values = new Option<int>("--values") { Description = "multivalue: values the asked key holds.", DefaultValueFactory = _ => 4 };
        var hops = new Option<int>("--hops") { Description = "vt: links per chain (1 to 4); the constructed model gets one link layer per hop.", DefaultValueFactory = _ => 2 };
        var chains = new Option<int>("--chains") { Description = "vt: distractor chains beside the asked one.", DefaultValueFactory = _ => 4 };
        var policies = new Option<string[]>("--policy") { Description = "A policy to compare (repeat; default: full, kivi and specache k=64 at 2 and 1 bit, streaming/h2o with specache 1-bit's fast-tier bytes).", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Folder for the reports and plots.", DefaultValueFactory = _ => "eval-results" };
        var similarity = new Option<double>("--key-similarity") { Description = "Constructed model: how much its keys share, 0 to 0.9 (harder for every policy).", DefaultValueFactory = _ => 0 };
        var command = new Command("niah", "RULER-style key-value retrieval (single, multi-key, multi-value needles, variable tracking) per policy, on the constructed retrieval model (default) or --model.");
        common.AddTo(command);
        command.Options.Add(tasks);
        command.Options.Add(lengths);
        command.Options.Add(depths);
        command.Options.Add(samples);
        command.Options.Add(distractors);
        command.Options.Add(values);
        command.Options.Add(hops);
        command.Options.Add(chains);
        command.Options.Add(policies);
        command.Options.Add(output);
        command.Options.Add(similarity);
        command.SetAction(result => CliErrors.Run(() =>
        {
            int[] lengthList = ParseList(result.GetValue(lengths)!, int.Parse, "--lengths");
            double[] depthList = ParseList(result.GetValue(depths)!, s => double.Parse(s, CultureInfo.InvariantCulture), "--depths");
            var taskList = result.GetValue(tasks)!.Split(',', StringSplitOptions.RemoveEmptyEntries)
                .Select(t => RetrievalTask.Parse(t, result.GetValue(distractors), result.GetValue(values), result.GetValue(hops), result.GetValue(chains))).ToList();
            if (taskList.Count == 0) throw new ArgumentException("--tasks names no task");
            // Every question is made once up front, so a length, depth or count that cannot work fails before the model loads.
            foreach (var task in taskList)
                foreach (int length in lengthList)
                    foreach (double depth in depthList) task.Make(length, depth, seed: 0);
            string[]? given = result.GetValue(policies) is { Length: > 0 } g ? g : null;
            foreach (string spec in given ?? []) PolicySpec.Parse(spec);
            if (result.GetValue(samples) < 1) throw new ArgumentException("--samples must be positive");
            string outDir = result.GetValue(output)!;
            SpeCache.Bench.ReportWriter.PrepareFolder(outDir); // before the run, not after it
            string? constructed = null;
            if (result.GetValue(common.Model) == null)
            {
                // The constructed model, made on first use in the cache folder (never committed).
                double s = result.GetValue(similarity);
                if (s is < 0 or > 0.9) throw new ArgumentException("--key-similarity must be between 0 and 0.9");
                // Variable tracking needs one link layer per hop; the other tasks run on that model too.
                int linkLayers = taskList.Max(t => t.Hops);
                constructed = RetrievalModelPath(s, linkLayers);
                if (!File.Exists(constructed))
                    Progress.Run("Writing the constructed retrieval model", () => { RetrievalModel.Write(constructed, keySimilarity: s, hops: linkLayers); return 0; });
            }
            using var engine = common.LoadEngine(result, constructed);
            var specs = given ?? EvalPolicies.Retrieval(engine.Config, lengthList.Max());
            string modelName = Path.GetFileName(constructed ?? common.ModelPath(result));
            var suite = new RetrievalSuite(modelName, Progress.Bars(bar => taskList.Select(task =>
                RetrievalEval.Run(engine.Model, modelName, specs, lengthList, depthList, result.GetValue(samples), task, bar)).ToList()));

            var written = new List<string> { Path.Combine(outDir, "niah.json"), Path.Combine(outDir, "niah.md") };
            File.WriteAllText(written[0], JsonSerializer.Serialize(suite, EvalReports.Json) + "\n");
            File.WriteAllText(written[1], EvalReports.Markdown(suite));
            foreach (var report in suite.Tasks)
            {
                written.Add(EvalPlots.AccuracyVersusBytes(report, Path.Combine(outDir, $"niah-{report.Task}-accuracy-vs-bytes.png")));
                foreach (var p in report.Policies)
                    written.Add(EvalPlots.NiahHeatmap(report, p, Path.Combine(outDir, $"niah-{report.Task}-{Slug(p.Label)}.png")));
            }
            Console.Out.Write(EvalReports.Markdown(suite));
            Console.Error.WriteLine($"wrote {string.Join(", ", written)}");
            return 0;
        }));
        return command;
    }

    static string RetrievalModelPath(double similarity, int hops)
    {
        string root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        string dir = Path.Combine(root, "specache", "models");
        Directory.CreateDirectory(dir);
        string suffix = (similarity == 0 ? "" : $"-s{similarity.ToString("0.##", CultureInfo.InvariantCulture)}") + (hops == 0 ? "" : $"-vt{hops}");
        return Path.Combine(dir, $"specache-retrieval-128k{suffix}.gguf");
    }

    static T[] ParseList<T>(string text, Func<string, T> parse, string option)
    {
        try { return [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(parse)]; }
        catch (FormatException) { throw new ArgumentException($"{option} must be a comma-separated list of numbers (got '{text}')"); }
    }

    static string Slug(string label) => string.Concat(label.Select(c => char.IsLetterOrDigit(c) ? c : '-'));

    /// <summary>A text drawn from the model itself (temperature 1, seed 0): in distribution, and not the greedy path every policy would agree on.</summary>
    static int[] SampleText(Engine engine, int length)
    {
        using var cache = engine.Options.KvCache.Policy == "full" ? engine.CreateCache() : SpeCache.KvCache.KvCacheFactory.Create(new(), engine.Config, engine.ContextLength, engine.Model.Backend.Threads);
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
}
