using System.Runtime.InteropServices;
using System.Text;
using SpeCache.KvCache;
using SpeCache.Tokenizers;

namespace SpeCache.Generation;

/// <summary>
/// What one generation does with each step's logits: sample the next token (with its own sampler
/// and history), decide whether the generation ends, and release text only in whole UTF-8
/// characters and never past a stop string. The decode loop around it (one sequence in
/// <see cref="Generator"/>, many in <see cref="BatchScheduler"/>) only runs the forward passes.
/// </summary>
internal sealed class SequenceOutput
{
    readonly ITokenizer _tokenizer;
    readonly GenerationOptions _options;
    readonly GenerationStats _stats;
    readonly IKvCache _cache;
    readonly Sampler _sampler;
    readonly List<int> _history;
    readonly Decoder _utf8 = Encoding.UTF8.GetDecoder();
    readonly StopStringMatcher _stop;
    readonly bool _afterBos;
    char[] _chars = new char[64];

    public SequenceOutput(ITokenizer tokenizer, int vocabSize, int[] prompt, GenerationOptions options, IKvCache cache, GenerationStats stats)
    {
        _tokenizer = tokenizer;
        _options = options;
        _stats = stats;
        _cache = cache;
        _sampler = new Sampler(options.Sampling, vocabSize);
        _history = new List<int>(prompt.Length + options.MaxTokens);
        _history.AddRange(prompt);
        _stop = new StopStringMatcher(options.StopStrings);
        _afterBos = prompt[^1] == tokenizer.BosToken;
        stats.PromptTokens = prompt.Length;
    }

    /// <summary>The last token sampled: the one the next decode step runs.</summary>
    public int LastToken { get; private set; } = -1;

    /// <summary>Whether the generation has ended (its reason is in the stats).</summary>
    public bool Finished { get; private set; }

    /// <summary>Ends a generation that asked for no tokens at all, right after its prefill.</summary>
    public bool FinishIfNothingToGenerate()
    {
        if (_options.MaxTokens > 0) return false;
        Finish(FinishReason.Length);
        return true;
    }

    /// <summary>
    /// Samples the token that follows <paramref name="logits"/> and returns the text it releases
    /// (possibly empty). When the generation ends here, <see cref="Finished"/> becomes true and the
    /// text held back for stop strings is released with it.
    /// </summary>
    public string Next(ReadOnlySpan<float> logits, DecodeStepper? stepper = null)
    {
        if (Finished) throw new InvalidOperationException("the generation has finished");
        int token = _sampler.Sample(logits, CollectionsMarshal.AsSpan(_history));
        stepper?.Observe(token);
        if (!_options.IgnoreEndOfGeneration && _tokenizer.IsEndOfGeneration(token))
            return Finish(FinishReason.EndOfGeneration);
        LastToken = token;
        _history.Add(token);
        _stats.Tokens.Add(token);
        _stats.GeneratedTokens++;

        var bytes = _tokenizer.TokenBytes(token);
        // Right after BOS, SentencePiece's prefix space belongs to no word: drop it, as llama2.c does.
        if (_stats.GeneratedTokens == 1 && _afterBos && _tokenizer.AddsSpacePrefix && bytes.Length > 0 && bytes[0] == (byte)' ')
            bytes = bytes[1..];
        int needed = _utf8.GetCharCount(bytes, flush: false);
        if (needed > _chars.Length) _chars = new char[needed * 2];
        int written = _utf8.GetChars(bytes, _chars, flush: false);
        string release = _stop.Push(new string(_chars, 0, written));
        if (_stop.Stopped) return release + Finish(FinishReason.Stop);
        if (_stats.GeneratedTokens >= _options.MaxTokens) return release + Finish(FinishReason.Length);
        if (_cache.Length >= _cache.Capacity) return release + Finish(FinishReason.ContextFull);
        return release;
    }

    /// <summary>Ends the generation for <paramref name="reason"/> and returns the text still held back.</summary>
    string Finish(FinishReason reason)
    {
        Finished = true;
        _stats.FinishReason = reason;
        return reason == FinishReason.Stop ? "" : _stop.Flush();
    }
}
