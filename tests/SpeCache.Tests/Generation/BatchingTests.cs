using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Tests.Generation;

/// <summary>
/// Batched decoding: several sequences in one forward pass compute exactly what each computes alone,
/// and the queue batches concurrent requests under a fast-tier budget without mixing them up.
/// </summary>
public sealed class BatchingTests
{
    static Engine Load(string model, string policy = "full", int threads = 1) =>
        Engine.Load(model, new EngineOptions { Threads = threads, KvCache = PolicySpec.Parse(policy) });

    static CancellationToken Ct => TestContext.Current.CancellationToken;

    static GenerationOptions Greedy(int maxTokens) => new() { MaxTokens = maxTokens, Sampling = new SamplingOptions { Temperature = 0 }, IgnoreEndOfGeneration = true };

    /// <summary>
    /// With two threads the step's three sequences weigh about the same, so they attend spread
    /// over the engine's threads, and each cache's own split of its heads runs on its sequence's.
    /// </summary>
    [Theory]
    [InlineData("full", 1)]
    [InlineData("kivi:bits=2,residual=32", 1)]
    [InlineData("specache:bits=2,k=8,residual=32,spec=on", 1)]
    [InlineData("streaming:sinks=4,window=40", 1)]
    [InlineData("h2o:window=20,heavy=20", 1)]
    [InlineData("full", 2)]
    [InlineData("kivi:bits=2,residual=32", 2)]
    [InlineData("specache:bits=2,k=8,residual=32,spec=on", 2)]
    public void ForwardBatchEqualsEachSequenceAlone(string policy, int threads)
    {
        using var engine = Load(TestPaths.TinyStories656K, policy, threads);
        var model = engine.Model;
        int vocab = engine.Config.VocabSize;
        // Three sequences at different depths: two past the residual window, one just started.
        int[][] histories = [Tokens(70, seed: 1), Tokens(45, seed: 2), Tokens(3, seed: 3)];
        var alone = new List<IKvCache>();
        var batched = new List<IKvCache>();
        var state = model.CreateState();
        foreach (var history in histories)
        {
            alone.Add(engine.CreateCache());
            batched.Add(engine.CreateCache());
            model.Forward(history, alone[^1], state);
            model.Forward(history, batched[^1], state);
        }

        // One step: sequence 0 decodes a token, 1 decodes a token beside a speculative row where the
        // policy has one, 2 prefills a chunk of 9 tokens, of which only the last gives logits.
        int[] next0 = [17], chunk2 = Tokens(9, seed: 4);
        int[] next1 = batched[1].SpeculativeRows > 0 ? [23, 99] : [23];
        int[] tokens = [.. next0, .. next1, .. chunk2];
        SequenceRows[] sequences =
        [
            new(batched[0], 1, OutputRows: 1),
            new(batched[1], next1.Length, SpeculativeRows: next1.Length - 1, OutputRows: next1.Length),
            new(batched[2], chunk2.Length, OutputRows: 1),
        ];
        Assert.Equal(threads > 1, SequenceAttention.SequencesShareOut(sequences, engine.Model.Backend.Threads.ThreadCount));
        float[] together = model.ForwardBatch(tokens, sequences, model.CreateState(16)).ToArray();
        Assert.Equal((2 + next1.Length) * vocab, together.Length);

        float[] expected0 = model.Forward(next0, alone[0], state).ToArray();
        float[] expected1 = model.Forward(next1, alone[1], state, allLogits: true, speculativeRows: next1.Length - 1).ToArray();
        float[] expected2 = model.Forward(chunk2, alone[2], state).ToArray();
        Assert.Equal(expected0, together[..vocab]);
        Assert.Equal(expected1, together[vocab..((1 + next1.Length) * vocab)]);
        Assert.Equal(expected2, together[((1 + next1.Length) * vocab)..]);
        for (int i = 0; i < histories.Length; i++)
            Assert.Equal(alone[i].Length, batched[i].Length);
        Assert.Equal(histories[1].Length + 1, batched[1].Length); // the speculative row was not kept

        foreach (var cache in alone.Concat(batched)) cache.Dispose();
    }

    [Fact]
    public void ForwardBatchRefusesRowsThatDoNotAddUp()
    {
        using var engine = Load(TestPaths.Stories260K);
        using var cache = engine.CreateCache();
        var state = engine.Model.CreateState(4);
        Assert.Throws<ArgumentException>(() => engine.Model.ForwardBatch([1, 2, 3], [new SequenceRows(cache, 2, OutputRows: 1)], state));
        Assert.Throws<ArgumentOutOfRangeException>(() => engine.Model.ForwardBatch([1, 2], [new SequenceRows(cache, 2, OutputRows: 3)], state));
        Assert.Throws<ArgumentException>(() => engine.Model.ForwardBatch([1, 2, 3, 4, 5], [new SequenceRows(cache, 5, OutputRows: 1)], state));
        Assert.Equal(0, cache.Length);
    }

    [Theory]
    [InlineData("full")]
    [InlineData("kivi:bits=2,residual=32")]
    [InlineData("specache:bits=1,group=32,k=8,residual=32,spec=on")]
    public async Task ConcurrentRequestsGiveWhatEachGivesAlone(string policy)
    {
        using var engine = Load(TestPaths.TinyStories656K, policy);
        string[] prompts = ["Once upon a time", "The little dog", "Lily and Tom went to the park. They", "One day, a big bird", "Sam had a red ball"];
        int[] lengths = [40, 7, 25, 60, 1];
        var expected = prompts.Select((p, i) => GreedyAlone(engine, engine.Encode(p), lengths[i])).ToArray();

        using var queue = new GenerationQueue(engine, new BatchOptions { MaxBatch = 4, PrefillChunk = 8 });
        var stats = prompts.Select(_ => new GenerationStats()).ToArray();
        var answers = await Task.WhenAll(prompts.Select((p, i) => Collect(queue.RunAsync(engine.Encode(p), Greedy(lengths[i]), stats[i], Ct))));
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(expected[i], answers[i]);
            Assert.Equal(lengths[i], stats[i].GeneratedTokens);
            Assert.Equal(FinishReason.Length, stats[i].FinishReason);
        }
        Assert.Equal(prompts.Length, queue.Completed);
        Assert.True(queue.Steps < lengths.Sum(), $"{queue.Steps} steps for {lengths.Sum()} tokens: nothing was batched");
        await WaitUntil(() => queue.Running == 0);
        Assert.Equal(new KvMemory(0, 0), queue.CacheMemory);
    }

    [Fact]
    public async Task TheBudgetBoundsTheBatchAndRefusesWhatCouldNeverFit()
    {
        using var engine = Load(TestPaths.Stories260K);
        var config = engine.Config;
        int[] prompt = engine.Encode("Once upon a time");
        const int maxTokens = 30;
        long perRequest = KvCacheFactory.FastTierBytes(engine.Options.KvCache, config, prompt.Length + maxTokens);
        // Room for two such requests at once, not three.
        using var queue = new GenerationQueue(engine, new BatchOptions { MaxBatch = 8, FastTierBudgetBytes = 2 * perRequest + perRequest / 2 });

        int mostRunning = 0;
        using var watching = new CancellationTokenSource();
        var watcher = Task.Run(async () =>
        {
            while (!watching.IsCancellationRequested)
            {
                mostRunning = Math.Max(mostRunning, queue.Running);
                Assert.True(queue.CacheMemory.FastTierBytes <= queue.Batch.FastTierBudgetBytes);
                await Task.Delay(1, Ct);
            }
        }, Ct);
        var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => Collect(queue.RunAsync(prompt, Greedy(maxTokens), new GenerationStats(), Ct))));
        watching.Cancel();
        await watcher;
        Assert.All(answers, a => Assert.Equal(answers[0], a));
        Assert.InRange(queue.PeakFastTierBytes, perRequest, 2 * perRequest);
        Assert.InRange(mostRunning, 1, 2);

        // A request whose cache alone exceeds the budget is refused at once, before it is queued.
        var tooLong = Greedy(400);
        var error = Assert.Throws<KvBudgetExceededException>(() => queue.RunAsync(prompt, tooLong, new GenerationStats(), Ct));
        Assert.Contains("budget", error.Message);
        Assert.Equal(1, queue.Refused);
        Assert.Equal(0, queue.Queued);
    }

    [Fact]
    public async Task CancellingOneRequestFreesItsCacheAndLeavesTheOthers()
    {
        using var engine = Load(TestPaths.Stories260K);
        int[] prompt = engine.Encode("Once upon a time");
        string expected = GreedyAlone(engine, prompt, 40); // before the queue runs: one backend, one caller at a time
        using var queue = new GenerationQueue(engine, new BatchOptions { MaxBatch = 4 });
        QueueHold.UntilAbandoned(queue, fromStep: 16); // 400 tokens of this model take a blink: still running when cancelled
        using var cancel = new CancellationTokenSource();
        var stats = new GenerationStats();
        var cancelled = Task.Run(async () =>
        {
            await foreach (string _ in queue.RunAsync(prompt, Greedy(400), stats, cancel.Token))
                if (stats.GeneratedTokens >= 5) cancel.Cancel();
        }, Ct);
        var survivor = Collect(queue.RunAsync(prompt, Greedy(40), new GenerationStats(), Ct));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal(expected, await survivor);
        await WaitUntil(() => queue.Running == 0);
        Assert.Equal(1, queue.Cancelled);
        Assert.Equal(1, queue.Completed);
        Assert.Equal(0, queue.CacheMemory.FastTierBytes);
        Assert.True(stats.GeneratedTokens < 400);
    }

    [Fact]
    public async Task InvalidRequestsAreRefusedWhenMade()
    {
        using var engine = Load(TestPaths.Stories260K);
        using var queue = new GenerationQueue(engine);
        Assert.Throws<ArgumentException>(() => queue.RunAsync([], Greedy(4), new GenerationStats(), Ct));
        Assert.Throws<PromptTooLongException>(() => queue.RunAsync(new int[engine.ContextLength + 1], Greedy(4), new GenerationStats(), Ct));
        Assert.Throws<ArgumentOutOfRangeException>(() => queue.RunAsync([1], Greedy(-1), new GenerationStats(), Ct));
        // Nothing to generate: the prompt is prefilled and the request ends with no text.
        var stats = new GenerationStats();
        Assert.Equal("", await Collect(queue.RunAsync(engine.Encode("Hello"), Greedy(0), stats, Ct)));
        Assert.Equal(FinishReason.Length, stats.FinishReason);
        Assert.Equal(0, stats.GeneratedTokens);
        Assert.Throws<ArgumentException>(() => new BatchOptions { MaxBatch = 0 }.Validate());
    }

    static string GreedyAlone(Engine engine, int[] prompt, int maxTokens)
    {
        using var cache = engine.CreateCache();
        return string.Concat(engine.Generator.Generate(prompt, Greedy(maxTokens), cache, new GenerationStats(), Ct));
    }

    static async Task<string> Collect(IAsyncEnumerable<string> pieces)
    {
        var text = new System.Text.StringBuilder();
        await foreach (string piece in pieces) text.Append(piece);
        return text.ToString();
    }

    static async Task WaitUntil(Func<bool> condition)
    {
        for (int i = 0; i < 500 && !condition(); i++) await Task.Delay(10, Ct);
        Assert.True(condition());
    }

    static int[] Tokens(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next(3, 2000)).ToArray();
    }
}
