// `specache bench` with llama.cpp beside us: the same options and report, plus llama.cpp's rows for its
// f16, q8_0 and q4_0 KV caches on the same file, threads and depths, and every row's ratio to llama.cpp f16.
// Usage: dotnet run -c Release --project bench/Bench -- [the options of specache bench]
using SpeCache.Bench;

var command = BenchCommand.Create(new LlamaCppPeer(), name: "bench");
// A subcommand of the CLI gets --help from its root command; run on its own here, it needs its own.
command.Options.Add(new System.CommandLine.Help.HelpOption());
return command.Parse(args).Invoke();
