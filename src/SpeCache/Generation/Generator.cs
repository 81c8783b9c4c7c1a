using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
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
    /// <summary>Keep going past end-of-generation tokens (llama-server's <c>ignore_eos</c>), e.g. to measure a fixed length.</summary>
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
        var sampler = new Sampler(options.Sampling, _model.Config.VocabSize);
        var state = _model.CreateState(Math.Min(64, Math.Max(prompt.Length, 1)));
        var history = new List<int>(prompt.Length + options.MaxTokens);
        history.AddRange(prompt);
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = new char[64];
        var stop = new StopStringMatcher(options.StopStrings);
        stats.PromptTokens = prompt.Length;

        var clock = Stopwatch.StartNew();
        var logits = _model.Forward(prompt, cache, state).ToArray();
        stats.PrefillTime = clock.Elapsed;
        clock.Restart();
        if (options.MaxTokens == 0)
        {
            stats.FinishReason = FinishReason.Length;
            yield break;
        }

        while (true)
        {
            cancellation.ThrowIfCancellationRequested();
            int token = sampler.Sample(logits, CollectionsMarshal.AsSpan(history));
            if (!options.IgnoreEndOfGeneration && _tokenizer.IsEndOfGeneration(token))
            {
                stats.FinishReason = FinishReason.EndOfGeneration;
                break;
            }
            history.Add(token);
            stats.Tokens.Add(token);
            stats.GeneratedTokens++;

            var bytes = _tokenizer.TokenBytes(token);
            // Right after BOS, SentencePiece's prefix space belongs to no word: drop it, as llama2.c does.
            if (stats.GeneratedTokens == 1 && prompt[^1] == _tokenizer.BosToken && _tokenizer.AddsSpacePrefix && bytes.Length > 0 && bytes[0] == (byte)' ')
                bytes = bytes[1..];
            int needed = decoder.GetCharCount(bytes, flush: false);
            if (needed > chars.Length) chars = new char[needed * 2];
            int written = decoder.GetChars(bytes, chars, flush: false);
            string release = stop.Push(new string(chars, 0, written));
            if (release.Length > 0) yield return release;
            if (stop.Stopped)
            {
                stats.FinishReason = FinishReason.Stop;
                break;
            }
            if (stats.GeneratedTokens >= options.MaxTokens)
            {
                stats.FinishReason = FinishReason.Length;
                break;
            }
            if (cache.Length >= cache.Capacity)
            {
                stats.FinishReason = FinishReason.ContextFull;
                break;
            }
            _model.Forward([token], cache, state).CopyTo(logits);
        }
        stats.DecodeTime = clock.Elapsed;
        if (stats.FinishReason != FinishReason.Stop)
        {
            string rest = stop.Flush();
            if (rest.Length > 0) yield return rest;
        }
    }
}

/// <summary>The prompt does not fit in the context that is left.</summary>
public sealed class PromptTooLongException(int promptTokens, int available)
    : Exception($"the prompt has {promptTokens} tokens, but the context has room for {available}")
{
    public int PromptTokens { get; } = promptTokens;
    public int Available { get; } = available;
}
