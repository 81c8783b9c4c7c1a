using System.Diagnostics;
using SpeCache.KvCache;
using SpeCache.Tokenizers;
using SpeCache.Transformer;

namespace SpeCache.Generation;

public enum FinishReason
{
    /// <summary>Reached the requested number of tokens.</summary>
    Length,
    /// <summary>The model produced an end-of-generation token.</summary>
    EndOfGeneration,
    /// <summary>The output reached a stop string.</summary>
    Stop,
    /// <summary>The context is full.</summary>
    ContextFull,
}

public sealed record GenerationOptions
{
    public int MaxTokens { get; init; } = 256;
    public SamplingOptions Sampling { get; init; } = new();
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Treat end-of-generation tokens as ordinary text and go on (llama.cpp's --ignore-eos), for measurements.</summary>
    public bool IgnoreEndOfGeneration { get; init; }
}

/// <summary>What one generation did and how fast; filled in as it runs.</summary>
public sealed class GenerationStats
{
    public int PromptTokens { get; internal set; }
    public int GeneratedTokens { get; internal set; }
    public TimeSpan PrefillTime { get; internal set; }
    public TimeSpan DecodeTime { get; internal set; }
    public FinishReason FinishReason { get; internal set; }
    public List<int> Tokens { get; } = new();

    public double PrefillTokensPerSecond => PromptTokens / Math.Max(PrefillTime.TotalSeconds, 1e-9);
    /// <summary>Decode speed over the tokens after the first (the first comes out of prefill).</summary>
    public double DecodeTokensPerSecond => Math.Max(GeneratedTokens - 1, 0) / Math.Max(DecodeTime.TotalSeconds, 1e-9);
}

/// <summary>
/// The decode loop: prefill the prompt, then sample, detokenize and feed back one token at a time,
/// releasing text only in whole UTF-8 characters and never past a stop string.
/// </summary>
public sealed class Generator
{
    readonly LlamaModel _model;
    readonly ITokenizer _tokenizer;

    public Generator(LlamaModel model, ITokenizer tokenizer)
    {
        _model = model;
        _tokenizer = tokenizer;
    }

    /// <summary>
    /// Generates after <paramref name="prompt"/>, continuing the sequence in <paramref name="cache"/>,
    /// and yields text as it becomes final.
    /// </summary>
    public IEnumerable<string> Generate(int[] prompt, GenerationOptions options, IKvCache cache, GenerationStats stats, CancellationToken cancellation = default)
    {
        if (prompt.Length == 0) throw new ArgumentException("the prompt has no tokens");
        if (options.MaxTokens < 0) throw new ArgumentOutOfRangeException(nameof(options), "max tokens must not be negative");
        options.Sampling.Validate();
        if (cache.Length + prompt.Length > cache.Capacity)
            throw new PromptTooLongException(prompt.Length, cache.Capacity - cache.Length);
        return Run(prompt, options, cache, stats, cancellation);
    }

    IEnumerable<string> Run(int[] prompt, GenerationOptions options, IKvCache cache, GenerationStats stats, CancellationToken cancellation)
    {
        var output = new SequenceOutput(_tokenizer, _model.Config.VocabSize, prompt, options, cache, stats);
        var state = _model.CreateState(Math.Min(64, Math.Max(prompt.Length, DecodeStepper.MaxRows)));
        var stepper = new DecodeStepper(_model, cache, state);

        var clock = Stopwatch.StartNew();
        // A copy: the forward state's logits are overwritten by the next step, and an iterator keeps no span across a yield.
        float[] logits = _model.Forward(prompt, cache, state).ToArray();
        stats.PrefillTime = clock.Elapsed;
        clock.Restart();
        if (output.FinishIfNothingToGenerate()) yield break;

        while (true)
        {
            cancellation.ThrowIfCancellationRequested();
            string text = output.Next(logits, stepper);
            if (text.Length > 0) yield return text;
            if (output.Finished) break;
            stepper.Step(output.LastToken).CopyTo(logits);
        }
        stats.DecodeTime = clock.Elapsed;
    }
}

/// <summary>The prompt does not fit in the context that is left.</summary>
public sealed class PromptTooLongException(int promptTokens, int available)
    : Exception($"the prompt has {promptTokens} tokens, but the context has room for {available}")
{
    public int PromptTokens { get; } = promptTokens;
    public int Available { get; } = available;
}
