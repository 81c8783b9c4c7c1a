using System.CommandLine;
using SpeCache.ModelFiles.Synthetic;

namespace SpeCache.Cli.Commands;

/// <summary><c>specache make-model</c>: a deterministic random-weight GGUF with the shape of a real model.</summary>
static class MakeModelCommand
{
    public static Command Create()
    {
        var shape = new Option<string>("--shape") { Description = $"Model shape: {string.Join(", ", SyntheticShape.Names)}.", DefaultValueFactory = _ => "llama-3.2-1b" };
        shape.AcceptOnlyFromAmong([.. SyntheticShape.Names]);
        var type = new Option<string>("--type") { Description = $"Weight type of the matrices: {string.Join(", ", SyntheticModelSpec.Types.Keys)}.", DefaultValueFactory = _ => "q8_0" };
        type.AcceptOnlyFromAmong([.. SyntheticModelSpec.Types.Keys]);
        var output = new Option<string?>("--out", "-o") { Description = "Folder to write into (default: the user's cache folder, specache/models)." };
        var layers = new Option<int?>("--layers") { Description = "Layer count instead of the shape's (e.g. 1 for a quick test model)." };
        var vocab = new Option<int?>("--vocab") { Description = $"Vocabulary size instead of the shape's (at least {SyntheticVocabulary.MinimumSize})." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the weights; the same seed gives the same bytes.", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads", "-t") { Description = "Generating threads (default: all cores); the bytes do not depend on it.", DefaultValueFactory = _ => 0 };

        var command = new Command("make-model", "Write (or reuse) a deterministic random-weight GGUF with the shape of a real model; prints its path.");
        foreach (var option in new Option[] { shape, type, output, layers, vocab, seed, threads }) command.Options.Add(option);
        command.SetAction(result => CliErrors.Run(() =>
        {
            var spec = new SyntheticModelSpec(SyntheticShape.Find(result.GetValue(shape)!), SyntheticModelSpec.Types[result.GetValue(type)!],
                result.GetValue(seed), result.GetValue(layers), result.GetValue(vocab));
            string path = Make(spec, result.GetValue(output), result.GetValue(threads));
            Console.WriteLine(path);
            return 0;
        }));
        return command;
    }

    /// <summary>The spec's file in <paramref name="folder"/> (default: the cache), made with a progress bar if it is not there yet.</summary>
    public static string Make(SyntheticModelSpec spec, string? folder, int threads)
    {
        spec.Validate();
        folder ??= SyntheticModel.DefaultFolder();
        string path = Path.Combine(folder, spec.FileName);
        if (SyntheticModel.IsMadeFrom(path, spec)) return path;
        return Progress.RunWithBar($"Making {spec.FileName}", progress => SyntheticModel.Ensure(spec, folder, out _, progress, threads));
    }
}
