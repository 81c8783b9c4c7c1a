using System.CommandLine;
using System.Runtime.InteropServices;
using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.KvCache.Tiers;
using SpeCache.ModelFiles.Synthetic;

namespace SpeCache.Bench;

/// <summary>Another engine whose rows the bench adds beside ours (llama.cpp in bench/Bench; the product has none).</summary>
public interface IBenchPeer
{
    string Name { get; }

    /// <summary>The row every row is compared with, e.g. "llama.cpp f16"; null: no ratios.</summary>
    string? BaselineKv { get; }

    /// <summary>Throws a one-line <see cref="ArgumentException"/> unless the peer offers every one of <paramref name="cacheTypes"/> (null: all).</summary>
    void CheckCacheTypes(IReadOnlyList<string>? cacheTypes);

    /// <summary>
    /// Measures every cache type the settings ask for at every depth, handing each row to <paramref name="measured"/>
    /// as it is done; returns them all. Each row's timed prefill and decode run inside <paramref name="bandwidth"/>'s
    /// <see cref="MemoryBandwidth.Around{T}"/>, which gives the row its roofline.
    /// </summary>
    List<BenchRow> Run(BenchSettings settings, MemoryBandwidth bandwidth, Action<string> status, Action<BenchRow> measured);
}

/// <summary>
/// The <c>bench</c> command: the same options and report for <c>specache bench</c> (our policies only) and
/// for bench/Bench (which passes a llama.cpp peer, adding its rows and the ratios).
/// </summary>
public static class BenchCommand
{
    public static Command Create(IBenchPeer? peer = null, string name = "bench")
    {
        var model = new Option<string?>("--model", "-m") { Description = "GGUF model to measure (default: the synthetic llama-3.2-1b q8_0, made on first use)." };
        var shape = new Option<string>("--shape") { Description = $"Without --model: the synthetic shape ({string.Join(", ", SyntheticShape.Names)}).", DefaultValueFactory = _ => "llama-3.2-1b" };
        shape.AcceptOnlyFromAmong([.. SyntheticShape.Names]);
        var type = new Option<string>("--type") { Description = $"Without --model: its weight type ({string.Join(", ", SyntheticModelSpec.Types.Keys)}).", DefaultValueFactory = _ => "q8_0" };
        type.AcceptOnlyFromAmong([.. SyntheticModelSpec.Types.Keys]);
        var layers = new Option<int?>("--layers") { Description = "Without --model: layer count instead of the shape's." };
        var vocab = new Option<int?>("--vocab") { Description = "Without --model: vocabulary size instead of the shape's." };
        var models = new Option<string?>("--models-dir") { Description = "Without --model: where synthetic models are kept (default: the user's cache folder)." };
        var prompt = new Option<int>("--prompt", "-p") { Description = "Prompt tokens whose prefill is timed.", DefaultValueFactory = _ => 512 };
        var decode = new Option<int>("--decode", "-n") { Description = "Decode steps timed.", DefaultValueFactory = _ => 32 };
        var depths = new Option<string>("--depths") { Description = "Context depths, comma-separated (tokens already in the context).", DefaultValueFactory = _ => "0,4096,16384,32768" };
        var kv = new Option<string?>("--kv") { Description = $"Our KV policies, comma-separated, each a name or a policy with settings, e.g. full,specache:bits=1,group=64 (default: all: {string.Join(", ", KvCacheFactory.Policies)})." };
        var peerKv = new Option<string?>("--peer-kv") { Description = "The peer's cache types, comma-separated (default: all it offers)." };
        var peerNoMmap = new Option<bool>("--peer-no-mmap") { Description = "The peer reads its weights into its own buffers instead of mapping the file (llama.cpp's --no-mmap)." };
        var peerFillChunk = new Option<int>("--peer-fill-chunk") { Description = "Fill the peer's context to each depth in independent chunks of this many tokens, joined into one sequence before timing (its timed steps do the same work; the fill is linear in the depth instead of quadratic). 0: one long prefill.", DefaultValueFactory = _ => 0 };
        var mmap = new Option<bool>("--mmap") { Description = "Our engine reads weights straight from the file's memory map instead of a copy in process memory." };
        var rounds = new Option<int>("--rounds") { Description = "Measure every engine this many times, taking turns which goes first; report medians (and each round in the JSON).", DefaultValueFactory = _ => 1 };
        var threads = new Option<int>("--threads", "-t") { Description = "Threads for every engine and the bandwidth test (default: all cores).", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out", "-o") { Description = "Folder for bench.md, bench.json and bench-decode.png.", DefaultValueFactory = _ => "bench-results" };
        var seed = new Option<int>("--seed") { Description = "Seed of the random tokens.", DefaultValueFactory = _ => 0 };
        var batch = new Option<bool>("--batch") { Description = "Measure throughput at a fixed fast-tier budget instead: per policy, the largest batch that fits and its tokens/s (writes batch.md, batch.json, batch-throughput.png)." };
        var batchBudget = new Option<string>("--batch-budget") { Description = "With --batch: fast-tier bytes all sequences' KV caches share.", DefaultValueFactory = _ => "1GiB" };
        var batchContext = new Option<int>("--context") { Description = "With --batch: tokens in each sequence's context.", DefaultValueFactory = _ => 8192 };
        var maxBatch = new Option<int>("--max-batch") { Description = "With --batch: largest batch tried.", DefaultValueFactory = _ => 64 };
        var policies = new Option<string[]>("--policy") { Description = $"With --batch: a policy to measure, e.g. specache:bits=1,group=64 (repeat; default: {string.Join(", ", BatchBench.DefaultPolicies)}).", AllowMultipleArgumentsPerToken = true };
        var streamMib = new Option<int>("--stream-mib") { Description = "MiB of each STREAM array (make it far bigger than the last-level cache).", DefaultValueFactory = _ => 128 };

        string what = peer == null ? "our KV policies" : $"our KV policies and {peer.Name}";
        var command = new Command(name, $"Prefill and decode tokens/s at context depths for {what}, memory bandwidth and the roofline; writes Markdown, JSON and a PNG plot.");
        foreach (var option in new Option[] { model, shape, type, layers, vocab, models, prompt, decode, depths, kv, threads, output, seed, streamMib, batch, batchBudget, batchContext, maxBatch, policies })
            command.Options.Add(option);
        if (peer != null)
        {
            command.Options.Add(peerKv);
            command.Options.Add(peerNoMmap);
            command.Options.Add(peerFillChunk);
        }
        command.Options.Add(rounds);
        command.Options.Add(mmap);
        command.SetAction(result => BenchProgress.Run(() =>
        {
            int threadCount = result.GetValue(threads) is > 0 and var t ? t : Environment.ProcessorCount;
            string folder = result.GetValue(output)!;
            ReportWriter.PrepareFolder(folder);
            if (result.GetValue(batch))
            {
                var batchSettings = new BatchBenchSettings
                {
                    ModelPath = "",
                    Context = Positive(result.GetValue(batchContext), "--context"),
                    DecodeTokens = Positive(result.GetValue(decode), "--decode"),
                    FastTierBudgetBytes = ParseBytes(result.GetValue(batchBudget)!, "--batch-budget"),
                    MaxBatch = Positive(result.GetValue(maxBatch), "--max-batch"),
                    Policies = result.GetValue(policies) is { Length: > 0 } given ? given : BatchBench.DefaultPolicies,
                    Threads = threadCount,
                    Seed = result.GetValue(seed),
                    MapWeights = result.GetValue(mmap),
                };
                foreach (string policy in batchSettings.Policies) PolicySpec.Parse(policy); // before making a model
                batchSettings = batchSettings with { ModelPath = result.GetValue(model) ?? MakeModel(result.GetValue(shape)!, result.GetValue(type)!, result.GetValue(layers), result.GetValue(vocab), result.GetValue(models), threadCount) };
                var batchReport = BenchProgress.Status("SpeCache batch", status => BatchBench.Run(batchSettings, status));
                foreach (var file in ReportWriter.WriteAll(batchReport, folder))
                    Console.Error.WriteLine($"wrote {file}");
                Console.Write(ReportWriter.Markdown(batchReport));
                return 0;
            }
            var settings = new BenchSettings
            {
                ModelPath = "",
                PromptTokens = Positive(result.GetValue(prompt), "--prompt"),
                DecodeTokens = Positive(result.GetValue(decode), "--decode"),
                Depths = ParseList(result.GetValue(depths)!, "--depths").Select(d => int.TryParse(d, out var v) && v >= 0 ? v : throw new ArgumentException($"--depths: '{d}' is not a token count")).Distinct().Order().ToArray(),
                Policies = result.GetValue(kv) is { } list ? SplitPolicies(list) : KvCacheFactory.Policies,
                PeerCacheTypes = result.GetValue(peerKv) is { } types ? ParseList(types, "--peer-kv") : null,
                Rounds = Positive(result.GetValue(rounds), "--rounds"),
                MapWeights = result.GetValue(mmap),
                PeerReadsWeights = result.GetValue(peerNoMmap),
                PeerFillChunk = result.GetValue(peerFillChunk) is >= 0 and var chunk ? chunk : throw new ArgumentException("--peer-fill-chunk: must be 0 (one prefill) or a token count"),
                Threads = threadCount,
                Seed = result.GetValue(seed),
                StreamArrayBytes = (long)Positive(result.GetValue(streamMib), "--stream-mib") << 20,
            };
            foreach (var policy in settings.Policies)
            {
                try { PolicySpec.Parse(policy); }
                catch (ArgumentException e) { throw new ArgumentException($"--kv: {e.Message}"); }
            }
            if (peer != null) peer.CheckCacheTypes(settings.PeerCacheTypes);
            // Only once every option is known good: making the default model takes a while and a GiB.
            settings = settings with { ModelPath = result.GetValue(model) ?? MakeModel(result.GetValue(shape)!, result.GetValue(type)!, result.GetValue(layers), result.GetValue(vocab), result.GetValue(models), threadCount) };
            // A run at 32K takes hours on a small machine: each row is written as it is done, so an
            // interrupted run keeps what it measured (the report says it is partial).
            var report = Run(settings, peer, partial => ReportWriter.WriteAll(partial, folder));
            foreach (var file in ReportWriter.WriteAll(report, folder))
                Console.Error.WriteLine($"wrote {file}");
            Console.Write(ReportWriter.Markdown(report));
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// Runs the bench: every engine, round by round. <paramref name="partial"/>, when given, gets a
    /// report of everything measured so far (not <see cref="BenchReport.Complete"/>) each time a row is done.
    /// </summary>
    public static BenchReport Run(BenchSettings settings, IBenchPeer? peer, Action<BenchReport>? partial = null)
    {
        var bandwidth = BenchProgress.Status($"Setting up the memory bandwidth test ({settings.Threads} threads)", _ => new MemoryBandwidth(settings.Threads, settings.StreamArrayBytes));
        var rounds = new List<List<BenchRow>>();
        for (int round = 0; round < settings.Rounds; round++)
        {
            string of = settings.Rounds > 1 ? $" (round {round + 1} of {settings.Rounds})" : "";
            var current = new List<BenchRow>();
            void Measured(BenchRow row)
            {
                current.Add(row);
                partial?.Invoke(Report(settings, peer, bandwidth, [.. rounds, current], complete: false));
            }
            void Ours() => BenchProgress.Status("SpeCache" + of, status => EngineBench.Run(settings, bandwidth, status, Measured));
            void Theirs()
            {
                if (peer != null) BenchProgress.Status(peer.Name + of, status => peer.Run(settings, bandwidth, status, Measured));
            }
            // Each engine goes first in every other round, so neither always runs right after the other.
            if (round % 2 == 0) { Ours(); Theirs(); }
            else { Theirs(); Ours(); }
            rounds.Add(current);
        }
        return Report(settings, peer, bandwidth, rounds, complete: true);
    }

    /// <summary>The report of <paramref name="rounds"/>' rows (the round under way among them): each round's ratios against its own baseline rows, then, over several rounds, the medians.</summary>
    static BenchReport Report(BenchSettings settings, IBenchPeer? peer, MemoryBandwidth bandwidth, List<List<BenchRow>> rounds, bool complete)
    {
        var withRatios = rounds.Select(rows => peer?.BaselineKv is { } kv ? WithRatios(rows, peer.Name, kv) : rows).ToList();
        var info = new FileInfo(settings.ModelPath);
        string? baseline = peer?.BaselineKv is { } baselineKv ? $"{peer.Name} {baselineKv}" : null;
        return new BenchReport(DateTimeOffset.UtcNow, Path.GetFileNameWithoutExtension(info.Name), info.Name, info.Length, MachineDescription(),
            settings.Threads, settings.PromptTokens, settings.DecodeTokens, settings.Depths, [.. bandwidth.Samples], baseline,
            settings.Rounds == 1 ? withRatios[0] : Medians(withRatios), settings.Rounds, WeightMemory(settings, peer), complete,
            ContextFill(settings, peer));
    }

    /// <summary>
    /// One row per engine, KV and depth: the median of its rounds' speeds, and the median of its
    /// rounds' ratios (each taken against the baseline of the same round; a round whose baseline at
    /// that depth is not measured yet has none). Its roofline is against the highest bandwidth any of its
    /// rounds saw, as a single row's is against the higher of its two.
    /// </summary>
    static List<BenchRow> Medians(List<List<BenchRow>> rounds) =>
        rounds.SelectMany(r => r).GroupBy(r => (r.Engine, r.Kv, r.Depth)).Select(g =>
        {
            var rows = g.ToList();
            double decode = Median(rows.Select(r => r.DecodeTokensPerSecond));
            var decodeRatios = rows.Where(r => r.DecodeRatio != null).Select(r => r.DecodeRatio!.Value).ToList();
            var prefillRatios = rows.Where(r => r.PrefillRatio != null).Select(r => r.PrefillRatio!.Value).ToList();
            return rows[0] with
            {
                PrefillTokensPerSecond = Median(rows.Select(r => r.PrefillTokensPerSecond)),
                DecodeTokensPerSecond = decode,
                BandwidthBytesPerSecond = rows.Max(r => r.BandwidthBytesPerSecond),
                DecodeRatio = decodeRatios.Count == 0 ? null : Median(decodeRatios),
                PrefillRatio = prefillRatios.Count == 0 ? null : Median(prefillRatios),
                DecodeTokensPerSecondByRound = [.. rows.Select(r => r.DecodeTokensPerSecond)],
                PrefillTokensPerSecondByRound = [.. rows.Select(r => r.PrefillTokensPerSecond)],
            };
        }).ToList();

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        int middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }

    /// <summary>
    /// Policies from a comma-separated list whose items may carry comma-separated settings:
    /// "full,specache:bits=1,group=64" is full and specache:bits=1,group=64, since a policy name
    /// never holds '=' and a setting always does.
    /// </summary>
    public static string[] SplitPolicies(string text)
    {
        var policies = new List<string>();
        foreach (string item in ParseList(text, "--kv"))
        {
            if (item.Contains('=') && !item.Contains(':'))
            {
                if (policies.Count == 0) throw new ArgumentException($"--kv: '{item}' is a setting with no policy before it");
                policies[^1] += "," + item;
            }
            else policies.Add(item);
        }
        return [.. policies];
    }

    static string WeightMemory(BenchSettings settings, IBenchPeer? peer)
    {
        string ours = settings.MapWeights ? "read from the file's memory map (--mmap)" : "copied into process memory at load (the default)";
        string theirs = peer == null ? "" : $"; {peer.Name}'s " + (settings.PeerReadsWeights ? "read into its own buffers (--peer-no-mmap)" : "loaded its default way");
        return $"Weight matrices: ours {ours}{theirs}.";
    }

    static string? ContextFill(BenchSettings settings, IBenchPeer? peer) =>
        peer == null || settings.PeerFillChunk == 0 || settings.Depths.Max() == 0 ? null :
        $"{peer.Name} filled its context in independent chunks of {settings.PeerFillChunk} tokens (--peer-fill-chunk), joined into one sequence before timing: " +
        "its timed prefill and decode attend over every position, as after one long prefill, but the filled keys and values are not those of one text (speed only).";

    public static string MachineDescription() =>
        $"{RuntimeInformation.OSDescription.Trim()}, {Environment.ProcessorCount} logical CPUs, .NET {Environment.Version}";

    /// <summary>Every row's speed over the baseline row's at the same depth.</summary>
    static List<BenchRow> WithRatios(List<BenchRow> rows, string engine, string kv)
    {
        var baseline = rows.Where(r => r.Engine == engine && r.Kv == kv).ToDictionary(r => r.Depth);
        return rows.Select(r => baseline.TryGetValue(r.Depth, out var b)
            ? r with { DecodeRatio = r.DecodeTokensPerSecond / b.DecodeTokensPerSecond, PrefillRatio = r.PrefillTokensPerSecond / b.PrefillTokensPerSecond }
            : r).ToList();
    }

    static string MakeModel(string shape, string type, int? layers, int? vocab, string? folder, int threads)
    {
        var spec = new SyntheticModelSpec(SyntheticShape.Find(shape), SyntheticModelSpec.Types[type], Seed: 0, layers, vocab);
        spec.Validate();
        folder ??= SyntheticModel.DefaultFolder();
        if (SyntheticModel.IsMadeFrom(Path.Combine(folder, spec.FileName), spec)) return Path.Combine(folder, spec.FileName);
        return BenchProgress.Bar($"Making {spec.FileName}", progress => SyntheticModel.Ensure(spec, folder, out _, progress, threads));
    }

    static string[] ParseList(string text, string option)
    {
        var items = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return items.Length > 0 ? items : throw new ArgumentException($"{option} needs at least one value");
    }

    static long ParseBytes(string text, string option)
    {
        try { return ByteSize.Parse(text); }
        catch (FormatException e) { throw new ArgumentException($"{option}: {e.Message}"); }
    }

    static int Positive(int value, string option) => value > 0 ? value : throw new ArgumentException($"{option} must be positive");
}
