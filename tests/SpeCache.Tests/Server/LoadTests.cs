using System.ClientModel;
using System.Net;
using OpenAI;
using OpenAI.Chat;
using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Tests.Server;

/// <summary>
/// A bounded load: many concurrent streaming clients against the batching server under a fast-tier
/// budget. Every request is answered (or refused with a proper error), no answer is lost or mixed
/// up, the budget is never exceeded, and nothing is left behind.
/// </summary>
public sealed class LoadTests
{
    const int Clients = 32;
    const int MaxTokens = 24;
    const int TooBigMaxTokens = 480;

    static readonly ChatTemplate Template = ChatTemplate.Parse(TestServer.ChatMlTemplate);

    static List<OpenAI.Chat.ChatMessage> Conversation(int i) => [new UserChatMessage($"Tell me story number {i} about a {Animals[i % Animals.Length]}.")];

    static readonly string[] Animals = ["cat", "dog", "bird", "fish", "frog", "bear", "lion"];

    [Fact]
    public async Task ConcurrentStreamingClientsAreAllServedUnderTheBudget()
    {
        var kv = PolicySpec.Parse("full"); // its bytes grow with the tokens asked for, so the budget decides how many run
        // What each request would produce alone, with the same engine settings, before the server starts.
        var expected = new string[Clients];
        long perRequest = 0, tooBig = 0;
        using (var engine = Engine.Load(TestPaths.Stories260K, new EngineOptions { Threads = 1, KvCache = kv }))
        {
            for (int i = 0; i < Clients; i++)
            {
                int[] prompt = engine.EncodeChat(Template, [new("user", $"Tell me story number {i} about a {Animals[i % Animals.Length]}.")]);
                perRequest = Math.Max(perRequest, KvCacheFactory.FastTierBytes(kv, engine.Config, prompt.Length + MaxTokens));
                using var cache = engine.CreateCache();
                tooBig = KvCacheFactory.FastTierBytes(kv, engine.Config, engine.Encode("Once upon a time").Length + TooBigMaxTokens);
                expected[i] = string.Concat(engine.Generator.Generate(prompt, new GenerationOptions { MaxTokens = MaxTokens, Sampling = new SamplingOptions { Temperature = 0 } },
                    cache, new GenerationStats(), TestContext.Current.CancellationToken));
            }
        }

        // A budget for a few requests at once (most of the 32 wait their turn) that a request for
        // TooBigMaxTokens tokens can never fit.
        long budget = Math.Min(6 * perRequest, tooBig - 1);
        Assert.True(budget >= 2 * perRequest, $"the budget of {budget} bytes holds fewer than two requests of {perRequest}");
        await using var server = await TestServer.StartAsync(batch: new BatchOptions { MaxBatch = 8, FastTierBudgetBytes = budget }, kvCache: kv);
        var client = new ChatClient(server.ModelId, new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(server.Address, "v1"), NetworkTimeout = TimeSpan.FromMinutes(5) });

        using var stopWatching = new CancellationTokenSource();
        double mostFast = 0, mostRunning = 0;
        var watcher = Task.Run(async () =>
        {
            while (!stopWatching.IsCancellationRequested)
            {
                var m = await server.MetricsAsync();
                mostFast = Math.Max(mostFast, m["specache_kv_cache_bytes{tier=\"fast\"}"]);
                mostRunning = Math.Max(mostRunning, m["specache_requests_running"]);
                await Task.Delay(20, TestContext.Current.CancellationToken);
            }
        }, TestContext.Current.CancellationToken);

        async Task<string> Stream(int i)
        {
            var text = new System.Text.StringBuilder();
            await foreach (var update in client.CompleteChatStreamingAsync(Conversation(i),
                new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = MaxTokens }, TestContext.Current.CancellationToken))
                foreach (var part in update.ContentUpdate) text.Append(part.Text);
            return text.ToString();
        }

        // Two more clients ask for more than the whole budget can hold: refused at once, not queued forever.
        async Task<HttpStatusCode> TooBig() =>
            (await server.PostJsonAsync("/v1/completions", $$"""{"prompt":"Once upon a time","max_tokens":{{TooBigMaxTokens}},"stream":true}""",
                cancellation: TestContext.Current.CancellationToken)).StatusCode;

        var answers = Task.WhenAll(Enumerable.Range(0, Clients).Select(Stream));
        var refused = await Task.WhenAll(TooBig(), TooBig());
        string[] results = await answers;
        stopWatching.Cancel();
        await watcher;

        TestContext.Current.TestOutputHelper?.WriteLine(
            $"{Clients} clients + 2 too big; budget {budget:N0} B ({perRequest:N0} B per request); fast tier seen at most {mostFast:N0} B, " +
            $"queue peak {server.Queue.PeakFastTierBytes:N0} B; at most {mostRunning} running together; refused: {string.Join(", ", refused.Select(r => (int)r))}");
        for (int i = 0; i < Clients; i++) Assert.Equal(expected[i], results[i]);
        Assert.All(refused, status => Assert.Equal(HttpStatusCode.BadRequest, status));
        Assert.True(mostFast <= budget, $"{mostFast} fast-tier bytes in use, budget {budget}");
        Assert.True(server.Queue.PeakFastTierBytes <= budget);
        Assert.True(mostRunning > 1, "no two requests ever ran together");

        var after = await server.MetricsAsync();
        Assert.Equal(Clients, after["specache_requests_completed_total"]);
        Assert.Equal(2, after["specache_requests_refused_total"]);
        Assert.Equal(0, after["specache_requests_running"]);
        Assert.Equal(0, after["specache_requests_queued"]);
        Assert.Equal(0, after["specache_kv_cache_bytes{tier=\"fast\"}"]);
        Assert.Equal(0, after["specache_kv_cache_bytes{tier=\"host\"}"]);
    }
}
