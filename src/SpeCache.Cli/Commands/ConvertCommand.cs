using System.CommandLine;
using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Conversion;
using SpeCache.Quants;

namespace SpeCache.Cli.Commands;

/// <summary><c>specache convert</c>: write a GGUF (that llama.cpp also loads) from any model we read.</summary>
static class ConvertCommand
{
    static readonly Dictionary<string, GgmlType> Types = new(StringComparer.OrdinalIgnoreCase)
    {
        ["f32"] = GgmlType.F32,
        ["f16"] = GgmlType.F16,
        ["bf16"] = GgmlType.BF16,
        ["q8_0"] = GgmlType.Q8_0,
        ["q4_0"] = GgmlType.Q4_0,
        ["q4_k"] = GgmlType.Q4_K,
        ["q6_k"] = GgmlType.Q6_K,
    };

    public static Command Create()
    {
        var input = new Option<string>("--input", "-i") { Description = "Source: a llama2.c .bin, a Hugging Face folder, or a GGUF.", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "The GGUF file to write.", Required = true };
        var type = new Option<string>("--type") { Description = $"Weight type of the 2-D tensors: {string.Join(", ", Types.Keys)}.", DefaultValueFactory = _ => "f16" };
        type.AcceptOnlyFromAmong([.. Types.Keys]);
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for llama2.c checkpoints (default: beside the model)." };
        var command = new Command("convert", "Write a GGUF from a llama2.c checkpoint, a Hugging Face folder or another GGUF.");
        command.Options.Add(input);
        command.Options.Add(output);
        command.Options.Add(type);
        command.Options.Add(tokenizer);
        command.SetAction(result => CliErrors.Run(() =>
        {
            string source = result.GetValue(input)!;
            string target = result.GetValue(output)!;
            if (Path.GetFullPath(source) == Path.GetFullPath(target)) throw new ArgumentException("--output must differ from --input");
            using var model = ModelLoader.Open(source);
            var metadata = TokenizerMetadata.For(model, result.GetValue(tokenizer));
            var notes = Progress.Run($"Converting to {Path.GetFileName(target)}",
                () => GgufConverter.Write(model, target, Types[result.GetValue(type)!], metadata));
            foreach (var note in notes) Console.Error.WriteLine($"note: {note}");
            Console.WriteLine($"wrote {target} ({new FileInfo(target).Length:N0} bytes)");
            return 0;
        }));
        return command;
    }
}
