using SpeCache.LlamaCpp;

namespace SpeCache.Tests.LlamaCpp;

/// <summary>The llama.cpp peer answers the questions our engine will be compared on, reproducibly.</summary>
[Collection(LlamaCppCollection.Name)]
public class LlamaCppModelTests
{
    // Llama-2's sentencepiece vocabulary, read from the GGUF's tokenizer.ggml.tokens: "<s>" is 1,
    // "▁Hello" is 15043, "▁world" is 3186. SPM prefixes the text with a space ("▁Hello▁world") and both
    // words are whole pieces, so with BOS the ids are 1 15043 3186.
    static readonly int[] HelloWorld = [1, 15043, 3186];

    const string Prompt = "Hello world, this is a test of the llama.cpp peer.";

    // One thread: ggml's workers spin at each barrier, so with 2 threads on 2 cores a busy neighbour
    // process can stall every step for a scheduler tick (seen: 13 ms per token instead of 0.35 ms).
    // The numbers do not depend on the thread count (OneAndTwoThreadsGiveTheSameLogits).
    static LlamaCppModel Load(LlamaCacheType cacheType = LlamaCacheType.F16, int threads = 1) =>
        LlamaCppModel.Load(TestPaths.Llama2TinyRandom, threads, contextLength: 256, cacheType: cacheType);

    [Fact]
    public void LoadsTheTinyModel()
    {
        using var model = Load();
        Assert.Equal(32000, model.VocabSize);
        Assert.Equal(1, model.Bos);
        Assert.Equal(2, model.Eos);
        Assert.Equal(1, model.LayerCount);
        Assert.Equal(8, model.EmbeddingLength);
        Assert.Equal(LlamaFtype.F16, model.FileType);
        Assert.True(model.ContextLength >= 256);
        Assert.Equal(1, model.Threads);
        Assert.StartsWith("libggml-cpu-", LlamaCppRuntime.CpuBackend);
        Assert.Contains(LlamaCppRuntime.Devices, d => d.StartsWith("CPU", StringComparison.Ordinal));
    }

    [Fact]
    public void TokenizesHelloWorldAsSentencePieceDoes()
    {
        using var model = Load();
        Assert.Equal(HelloWorld, model.Tokenize("Hello world"));
        Assert.Equal(HelloWorld[1..], model.Tokenize("Hello world", addSpecial: false));
        Assert.Equal([1], model.Tokenize("<s>", addSpecial: false, parseSpecial: true));
        Assert.NotEqual([1], model.Tokenize("<s>", addSpecial: false, parseSpecial: false));
    }

    [Fact]
    public void PiecesAndDetokenizeInvertTokenize()
    {
        using var model = Load();
        Assert.Equal(" Hello", model.TokenToPiece(15043));
        Assert.Equal("", model.TokenToPiece(1));
        Assert.Equal("<s>", model.TokenToPiece(1, special: true));
        Assert.Equal([(byte)'A'], model.TokenToPieceBytes(3 + 'A')); // byte-fallback token <0x41>

        Assert.Equal(Prompt, model.Detokenize(model.Tokenize(Prompt, addSpecial: false)));
        // llama.cpp drops SPM's leading space only when the first token is text: after a BOS, removed or
        // rendered, the space stays. Our detokenizer is compared against exactly this.
        var withBos = model.Tokenize(Prompt);
        Assert.Equal(" " + Prompt, model.Detokenize(withBos, removeSpecial: true));
        Assert.Equal("<s> " + Prompt, model.Detokenize(withBos, unparseSpecial: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.TokenToPiece(32000));
    }

    [Fact]
    public void AllLogitsAreFiniteDeterministicAndEndWithLogits()
    {
        using var model = Load();
        var tokens = model.Tokenize(Prompt);
        var first = model.AllLogits(tokens);
        var second = model.AllLogits(tokens);

        Assert.Equal(tokens.Length, first.Length);
        foreach (var row in first)
        {
            Assert.Equal(model.VocabSize, row.Length);
            Assert.All(row, v => Assert.True(float.IsFinite(v)));
        }
        // Rows differ from each other: positions really were evaluated, not copied.
        Assert.NotEqual(first[0], first[^1]);
        for (var i = 0; i < first.Length; i++)
            Assert.Equal(first[i], second[i]);

        // The same last row whether every position or only the last asks for output; llama.cpp then runs
        // the last layer's tail on one row instead of all, and it comes out bit for bit the same here.
        Assert.Equal(first[^1], model.Logits(tokens));
    }

    [Fact]
    public void OneAndTwoThreadsGiveTheSameLogits()
    {
        using var one = Load(threads: 1);
        using var two = Load(threads: 2);
        Assert.Equal(2, two.Threads);
        var tokens = one.Tokenize(Prompt);
        var expected = one.AllLogits(tokens);
        var actual = two.AllLogits(tokens);
        for (var i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], actual[i]);
    }

    [Fact]
    public void LongInputsAreSplitIntoBatches()
    {
        using var model = LlamaCppModel.Load(TestPaths.Llama2TinyRandom, threads: 1, contextLength: 64, batchSize: 8);
        Assert.Equal(8, model.BatchCapacity);
        var tokens = model.Tokenize(Prompt + " " + Prompt);
        Assert.True(tokens.Length > 2 * model.BatchCapacity);

        var rows = model.AllLogits(tokens);
        Assert.Equal(tokens.Length, rows.Length);
        AssertClose(rows[^1], model.Logits(tokens), 1e-5f);
        Assert.Throws<ArgumentException>(() => model.Logits(new int[model.ContextLength + 1]));
    }

    [Fact]
    public void GreedyGenerationIsDeterministicAndAgreesWithAllLogits()
    {
        using var model = Load();
        var prompt = model.Tokenize(Prompt);
        var generated = model.GenerateGreedy(prompt, 24);
        Assert.Equal(24, generated.Length);
        Assert.Equal(generated, model.GenerateGreedy(prompt, 24));
        Assert.Empty(model.GenerateGreedy(prompt, 0));

        // Token i is the argmax after prompt + generated[..i]: the incremental KV-cache path and a
        // fresh batch evaluation pick the same tokens.
        var rows = model.AllLogits([.. prompt, .. generated[..^1]]);
        for (var i = 0; i < generated.Length; i++)
            Assert.Equal(generated[i], LlamaCppModel.ArgMax(rows[prompt.Length - 1 + i]));
    }

    [Fact]
    public void DecodeAfterContinuesTheSequenceInTheCache()
    {
        using var model = Load();
        var prompt = model.Tokenize(Prompt);
        int split = prompt.Length / 2;
        var expected = model.Decode(prompt, 8).GeneratedTokens;

        // The first half appended (in batches of whatever size), the second half as the prompt: the same
        // sequence, so the same greedy tokens, as one prefill of the whole prompt.
        model.ClearCache();
        model.Append(prompt[..split]);
        Assert.Equal(split, model.Position);
        var timing = model.DecodeAfter(prompt[split..], 8);
        Assert.Equal(expected, timing.GeneratedTokens);
        Assert.Equal(prompt.Length + 8, model.Position);
        Assert.Equal(prompt.Length - split, timing.PromptTokens);

        // After clearing, DecodeAfter starts at position 0, like Decode.
        model.ClearCache();
        Assert.Equal(0, model.Position);
        var fromEmpty = model.Decode(prompt[split..], 8).GeneratedTokens;
        model.ClearCache();
        Assert.Equal(fromEmpty, model.DecodeAfter(prompt[split..], 8).GeneratedTokens);
        Assert.Throws<ArgumentException>(() => model.Append(new int[model.ContextLength]));
    }

    [Fact]
    public void AChunkedFillLeavesOneSequenceOfEveryPositionThatTheNextTokensAttendTo()
    {
        using var model = LlamaCppModel.Load(TestPaths.Llama2TinyRandom, threads: 1, contextLength: 256, chunkedFill: true);
        var text = model.Tokenize(Prompt + " " + Prompt + " " + Prompt);
        var (fill, prompt) = (text[..24], text[24..]);
        var sequential = model.Decode(text, 6).GeneratedTokens;

        // One chunk holding the whole fill is one sequence: the same tokens as an ordinary prefill.
        model.ClearCache();
        model.AppendInChunks(fill, fill.Length);
        Assert.Equal(sequential, model.DecodeAfter(prompt, 6).GeneratedTokens);

        // Chunks of 5 (the last one short): sequence 0 holds every position once, the scratch sequence none.
        model.ClearCache();
        model.AppendInChunks(fill, 5);
        Assert.Equal(fill.Length, model.Position);
        Assert.Equal((0, fill.Length - 1), model.Positions(0));
        Assert.Equal((-1, -1), model.Positions(1));
        model.DecodeAfter(prompt[..1], 1);
        Assert.Equal((0, fill.Length + 1), model.Positions(0));

        // The next token attends to the first chunk and to the last: changing either changes what follows,
        // and with nothing changed the logits are the same again.
        var after = LogitsAfterChunks(model, fill, prompt[0]);
        Assert.NotEqual(model.Logits(prompt[..1]), after);
        Assert.NotEqual(after, LogitsAfterChunks(model, WithTokenChanged(fill, 1), prompt[0]));
        Assert.NotEqual(after, LogitsAfterChunks(model, WithTokenChanged(fill, fill.Length - 1), prompt[0]));
        Assert.Equal(after, LogitsAfterChunks(model, fill, prompt[0]));

        using var plain = Load();
        Assert.Throws<InvalidOperationException>(() => plain.AppendInChunks(fill, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.AppendInChunks(fill, 0));
    }

    static float[] LogitsAfterChunks(LlamaCppModel model, int[] fill, int next)
    {
        model.ClearCache();
        model.AppendInChunks(fill, 5);
        return model.LogitsAfter([next]);
    }

    static int[] WithTokenChanged(int[] tokens, int index)
    {
        var changed = (int[])tokens.Clone();
        changed[index] = changed[index] == 100 ? 101 : 100;
        return changed;
    }

    [Fact]
    public void AQuantizedCacheOnHeadsNarrowerThanABlockFailsWithLlamaCppsReason()
    {
        // This model's heads are 4 wide; a Q8_0 cache row needs a multiple of 32. llama.cpp refuses to
        // create the context, and its logged reason reaches the exception.
        var e = Assert.Throws<LlamaCppException>(() => Load(LlamaCacheType.Q8_0));
        Assert.Contains("could not create a context", e.Message);
        Assert.Contains("K cache type q8_0 with block size 32 does not divide n_embd_head_k=4", e.Message);
    }

    internal static void AssertClose(float[] expected, float[] actual, float tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = 0f;
        for (var i = 0; i < expected.Length; i++)
            worst = MathF.Max(worst, MathF.Abs(expected[i] - actual[i]));
        Assert.True(worst <= tolerance, $"max |difference| {worst} > {tolerance}");
    }
}

/// <summary>llama.cpp tests run one at a time and alone, so the 2 cores are theirs while they time and compare.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class LlamaCppCollection
{
    public const string Name = "llama.cpp peer";
}
