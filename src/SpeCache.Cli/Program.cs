using System.CommandLine;
using SpeCache.Cli.Commands;

var root = new RootCommand("specache: Llama-family inference in pure C# with a two-tier (SpeCache) KV cache");
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(ChatCommand.Create());
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(ConvertCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(MakeModelCommand.Create());
// Our KV policies only; bench/Bench runs the same command with llama.cpp's rows added.
root.Subcommands.Add(SpeCache.Bench.BenchCommand.Create());
root.Subcommands.Add(ServeCommand.Create());

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // One line instead of System.CommandLine's error list followed by the whole help text.
    Console.Error.WriteLine($"specache: error: {string.Join("; ", parsed.Errors.Select(e => System.Text.RegularExpressions.Regex.Replace(e.Message, @"\s+", " ")))} (see --help)");
    return 2;
}
return parsed.Invoke();
