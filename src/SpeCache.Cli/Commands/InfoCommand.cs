using System.CommandLine;
using System.Text.Json;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.ModelFiles;
using SpeCache.Quants;

namespace SpeCache.Cli.Commands;

/// <summary><c>specache info</c>: what a model file is, without running it.</summary>
static class InfoCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "Model file or folder (default: the embedded stories260K)." };
        var json = new Option<bool>("--json") { Description = "Print JSON." };
        var command = new Command("info", "Show a model's architecture, shapes, weight types, context length and KV bytes per token.");
        command.Options.Add(model);
        command.Options.Add(json);
        command.SetAction(result => CliErrors.Run(() =>
        {
            string path = result.GetValue(model) ?? DefaultModel.Path();
            using var file = ModelLoader.Open(path);
            var c = file.Config;
            var types = file.Tensors.Values
                .GroupBy(t => GgmlTypeInfo.Name(t.Type))
                .OrderBy(g => g.Key, StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => new { tensors = g.Count(), bytes = g.Sum(t => t.ByteLength) });
            long parameters = file.Tensors.Values.Where(t => !ReferenceEquals(t, file.TryTensor("output.weight")) || !c.TiedEmbeddings).Sum(t => t.ElementCount);
            var kv = KvVariants().ToDictionary(v => v.Label, v => KvBytesPerToken(v.Options, c));
            var info = new
            {
                path,
                format = file.Format,
                architecture = c.Architecture,
                parameters,
                vocab_size = c.VocabSize,
                dim = c.Dim,
                hidden_dim = c.HiddenDim,
                layers = c.LayerCount,
                heads = c.HeadCount,
                kv_heads = c.KvHeadCount,
                head_dim = c.HeadDim,
                context_length = c.ContextLength,
                rope_theta = c.RopeTheta,
                rope_layout = c.RopeLayout.ToString(),
                tied_embeddings = c.TiedEmbeddings,
                weight_types = types,
                kv_bytes_per_token = kv,
            };
            if (result.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(info, new JsonSerializerOptions { WriteIndented = true }));
                return 0;
            }
            Console.WriteLine($"model           {path}");
            Console.WriteLine($"format          {file.Format}");
            Console.WriteLine($"architecture    {c.Architecture}");
            Console.WriteLine($"parameters      {parameters:N0}");
            Console.WriteLine($"shape           vocab {c.VocabSize}, dim {c.Dim}, ffn {c.HiddenDim}, layers {c.LayerCount}, heads {c.HeadCount} (kv {c.KvHeadCount}), head dim {c.HeadDim}");
            Console.WriteLine($"context         {c.ContextLength}");
            Console.WriteLine($"rope            theta {c.RopeTheta}, {c.RopeLayout}{(c.RopeScaling != null ? ", llama3 scaling" : "")}");
            Console.WriteLine($"embeddings      {(c.TiedEmbeddings ? "tied" : "separate output head")}");
            foreach (var (name, t) in types)
                Console.WriteLine($"weights {name,-8} {t.tensors} tensors, {t.bytes:N0} bytes");
            long? fullBytes = kv["full f16"];
            foreach (var (policy, bytes) in kv)
                Console.WriteLine(bytes is long b
                    ? $"kv {policy,-20} {b,12:N0} fast-tier bytes per token ({b * (long)c.ContextLength / (1024.0 * 1024.0):F1} MiB at full context, 1/{(double)fullBytes! / b:F1} of full f16)"
                    : $"kv {policy,-20} not available for this model's head size {c.HeadDim}");
            return 0;
        }));
        return command;
    }

    /// <summary>The settings worth comparing: the 16-bit baseline and the low-bit copies the paper reports (2 bit G32, 1 bit G64).</summary>
    static IEnumerable<(string Label, KvCacheOptions Options)> KvVariants()
    {
        yield return ("full f16", new KvCacheOptions { Policy = "full" });
        foreach (var element in Enum.GetValues<FullKvElement>().Where(e => e != FullKvElement.F16))
            yield return ($"full {FullKvCache.Name(element)}", new KvCacheOptions { Policy = "full", FullElement = element });
        foreach (var policy in KvCacheFactory.Policies.Where(p => p != "full"))
        {
            var options = new KvCacheOptions { Policy = policy };
            if (policy is "kivi" or "specache")
            {
                yield return ($"{policy} 2-bit g32", options with { Kivi = new(2, 32, 64), SpeCache = new(2, 32, 64) });
                yield return ($"{policy} 1-bit g64", options with { Kivi = new(1, 64, 64), SpeCache = new(1, 64, 64) });
            }
            else
            {
                yield return (policy, options);
            }
        }
    }

    /// <summary>Fast-tier bytes per token of the per-token part of a policy's cache; null where the policy cannot run this shape.</summary>
    static long? KvBytesPerToken(KvCacheOptions options, SpeCache.Transformer.ModelConfig config)
    {
        try { return KvCacheFactory.FastTierBytesPerToken(options, config); }
        catch (ArgumentException) { return null; }
        catch (NotSupportedException) { return null; }
    }
}
