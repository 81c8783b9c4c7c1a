using System.CommandLine;
using SpeCache.Generation;

namespace SpeCache.Cli.Commands;

/// <summary>Sampling options, with llama.cpp's defaults so that the two can be compared like for like.</summary>
sealed class SamplingCliOptions
{
    readonly Option<float> _temperature = new("--temperature", "--temp") { Description = "Sampling temperature; 0 is greedy.", DefaultValueFactory = _ => 0.8f };
    readonly Option<int> _topK = new("--top-k") { Description = "Keep the k most likely tokens (0 = off).", DefaultValueFactory = _ => 40 };
    readonly Option<float> _topP = new("--top-p") { Description = "Nucleus sampling threshold (1 = off).", DefaultValueFactory = _ => 0.95f };
    readonly Option<float> _minP = new("--min-p") { Description = "Drop tokens below this fraction of the top probability (0 = off).", DefaultValueFactory = _ => 0.05f };
    readonly Option<float> _repeatPenalty = new("--repeat-penalty") { Description = "Penalty for tokens seen in the last --repeat-last-n (1 = off).", DefaultValueFactory = _ => 1.0f };
    readonly Option<int> _repeatLastN = new("--repeat-last-n") { Description = "How many recent tokens the repeat penalty looks at.", DefaultValueFactory = _ => 64 };
    readonly Option<ulong?> _seed = new("--seed", "-s") { Description = "Random seed (same seed, same output; default: random)." };
    readonly Option<string[]> _stop = new("--stop") { Description = "Stop when the output contains this text (repeatable).", AllowMultipleArgumentsPerToken = false };

    public void AddTo(Command command)
    {
        command.Options.Add(_temperature);
        command.Options.Add(_topK);
        command.Options.Add(_topP);
        command.Options.Add(_minP);
        command.Options.Add(_repeatPenalty);
        command.Options.Add(_repeatLastN);
        command.Options.Add(_seed);
        command.Options.Add(_stop);
    }

    public SamplingOptions Read(ParseResult result) => new()
    {
        Temperature = result.GetValue(_temperature),
        TopK = result.GetValue(_topK),
        TopP = result.GetValue(_topP),
        MinP = result.GetValue(_minP),
        RepetitionPenalty = result.GetValue(_repeatPenalty),
        RepetitionLastN = result.GetValue(_repeatLastN),
        Seed = result.GetValue(_seed),
    };

    public IReadOnlyList<string> StopStrings(ParseResult result) => result.GetValue(_stop) ?? [];
}
