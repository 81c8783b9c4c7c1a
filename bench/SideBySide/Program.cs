// Decode speed, ours against llama.cpp on the same GGUF files, in one process, same thread count.
// Usage: dotnet run -c Release --project bench/SideBySide -- [threads] [tokens] [runs]
// Writes a Markdown table to stdout. The models are made on first run in bench/SideBySide/models
// (gitignored): stories260K converted by our converter, and a random-weight Llama of a
// mid-sized shape written by ggml and quantized by llama.cpp.
using System.Diagnostics;
using SpeCache;
using SpeCache.Generation;
using SpeCache.LlamaCpp;
using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Conversion;
using SpeCache.Quants;

int threads = args.Length > 0 ? int.Parse(args[0]) : 2;
int tokens = args.Length > 1 ? int.Parse(args[1]) : 128;
int runs = args.Length > 2 ? int.Parse(args[2]) : 3;
string repo = FindRepo();
string dir = Path.Combine(repo, "bench", "SideBySide", "models");
Directory.CreateDirectory(dir);

var models = new List<(string Name, string Path)>();
string stories = Path.Combine(dir, "stories260K-f32.gguf");
if (!File.Exists(stories))
{
    using var source = ModelLoader.Open(Path.Combine(repo, "models", "stories260k", "stories260K.bin"));
    GgufConverter.Write(source, stories, GgmlType.F32, TokenizerMetadata.For(source));
}
models.Add(("stories260K F32", stories));
var shape = new RandomLlamaShape(EmbeddingLength: 1024, LayerCount: 8, HeadCount: 16, KvHeadCount: 4, FeedForwardLength: 2816, ContextLength: 2048);
string f16 = Path.Combine(dir, "llama-160m-random-f16.gguf");
if (!File.Exists(f16)) RandomLlamaWriter.Write(f16, Path.Combine(repo, "models", "llama-2-tiny-random", "llama-2-tiny-random.gguf"), shape, seed: 7, LlamaFtype.F16);
models.Add(("random Llama 160M F16", f16));
foreach (var (name, ftype) in new[] { ("Q8_0", LlamaFtype.Q8_0), ("Q4_K_M", LlamaFtype.Q4_K_M) })
{
    string path = Path.Combine(dir, $"llama-160m-random-{name.ToLowerInvariant()}.gguf");
    if (!File.Exists(path)) LlamaCppQuantizer.Quantize(f16, path, ftype, threads);
    models.Add(($"random Llama 160M {name}", path));
}

Console.WriteLine($"Decode of {tokens} tokens after a 1-token prompt, {threads} threads, best of {runs} runs; llama.cpp CPU backend: {LlamaCppRuntime.CpuBackend}");
Console.WriteLine();
Console.WriteLine("| model | file MiB | SpeCache tokens/s | llama.cpp tokens/s | ratio |");
Console.WriteLine("|---|---:|---:|---:|---:|");
foreach (var (name, path) in models)
{
    double peer = 0, ours = 0;
    using (var llama = LlamaCppModel.Load(path, threads, contextLength: 512))
    {
        int[] prompt = [llama.Bos];
        for (int r = 0; r < runs; r++) peer = Math.Max(peer, llama.Decode(prompt, tokens).DecodeTokensPerSecond);
    }
    using (var engine = Engine.Load(path, new EngineOptions { Threads = threads, ContextLength = 512 }))
    {
        var options = new GenerationOptions { MaxTokens = tokens, Sampling = SamplingOptions.Greedy };
        for (int r = 0; r < runs; r++)
        {
            using var cache = engine.CreateCache();
            var stats = new GenerationStats();
            // EOS must not end the run early: generate from BOS and count only completed runs.
            foreach (var _ in engine.Generator.Generate([engine.Tokenizer.BosToken], options, cache, stats)) { }
            if (stats.GeneratedTokens > 1) ours = Math.Max(ours, stats.DecodeTokensPerSecond);
        }
    }
    Console.WriteLine($"| {name} | {new FileInfo(path).Length / 1048576.0:F1} | {ours:F1} | {peer:F1} | {ours / peer:F2} |");
}

static string FindRepo()
{
    for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        if (File.Exists(Path.Combine(d.FullName, "SpeCache.slnx"))) return d.FullName;
    throw new InvalidOperationException("run from inside the repository");
}
