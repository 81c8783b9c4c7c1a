using System.ClientModel;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Tests.Server;

/// <summary>The official OpenAI .NET client talking to the real server, and greedy output checked against the engine.</summary>
public sealed class OpenAiClientTests : IAsyncLifetime
{
    TestServer _server = null!;

    public async ValueTask InitializeAsync() => _server = await TestServer.StartAsync();

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    ChatClient Client() => new(_server.ModelId, new ApiKeyCredential("unused"),
        new OpenAIClientOptions { Endpoint = new Uri(_server.Address, "v1"), NetworkTimeout = TimeSpan.FromMinutes(2) });

    static readonly List<OpenAI.Chat.ChatMessage> Conversation =
    [
        new SystemChatMessage("You tell short stories."),
        new UserChatMessage("Tell me about a cat."),
    ];

    /// <summary>The greedy reply the engine gives to <see cref="Conversation"/> through the same template.</summary>
    static string ExpectedReply(int maxTokens) => TestServer.GreedyReference(TestPaths.Stories260K,
        engine => engine.EncodeChat(ChatTemplate.Parse(TestServer.ChatMlTemplate),
            [new("system", "You tell short stories."), new("user", "Tell me about a cat.")]),
        maxTokens);

    [Fact]
    public async Task ChatCompletionIsTheEnginesGreedyReply()
    {
        ChatCompletion completion = await Client().CompleteChatAsync(Conversation,
            new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 16 }, TestContext.Current.CancellationToken);

        Assert.Equal(ExpectedReply(16), completion.Content[0].Text);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.StartsWith("chatcmpl-", completion.Id);
        Assert.Equal(_server.ModelId, completion.Model);
        Assert.True(completion.FinishReason is ChatFinishReason.Length or ChatFinishReason.Stop);
        Assert.True(completion.Usage.OutputTokenCount is > 0 and <= 16);
        int promptTokens = _server.Engine.EncodeChat(ChatTemplate.Parse(TestServer.ChatMlTemplate),
            [new("system", "You tell short stories."), new("user", "Tell me about a cat.")]).Length;
        Assert.Equal(promptTokens, completion.Usage.InputTokenCount);
        Assert.Equal(completion.Usage.InputTokenCount + completion.Usage.OutputTokenCount, completion.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task StreamingChatSendsRoleThenTokensThenFinishReason()
    {
        var updates = new List<StreamingChatCompletionUpdate>();
        await foreach (var update in Client().CompleteChatStreamingAsync(Conversation,
            new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 }, TestContext.Current.CancellationToken))
            updates.Add(update);

        Assert.Equal(ChatMessageRole.Assistant, updates[0].Role);
        string text = string.Concat(updates.SelectMany(u => u.ContentUpdate).Select(p => p.Text));
        Assert.Equal(ExpectedReply(12), text);
        // One update per token: more than one carries text.
        Assert.True(updates.Count(u => u.ContentUpdate.Count > 0 && u.ContentUpdate[0].Text.Length > 0) > 1);
        var finished = updates.Where(u => u.FinishReason != null).ToList();
        Assert.Single(finished);
        Assert.True(finished[0].FinishReason is ChatFinishReason.Length or ChatFinishReason.Stop);
        // The client asks for usage in the stream (stream_options.include_usage); the server sends it last.
        var usage = updates.Last(u => u.Usage != null).Usage;
        Assert.True(usage.OutputTokenCount is > 0 and <= 12);
    }

    [Fact]
    public async Task CompletionAtTemperatureZeroIsWhatGenerateGives()
    {
        // The OpenAI .NET client no longer exposes the legacy completions endpoint publicly, so this one is plain HTTP.
        const string prompt = "Once upon a time, there was a";
        var body = await _server.PostForJsonAsync("/v1/completions",
            $$"""{"model":"{{_server.ModelId}}","prompt":"{{prompt}}","max_tokens":24,"temperature":0}""");

        string expected = TestServer.GreedyReference(TestPaths.Stories260K, engine => engine.Encode(prompt), 24);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", body.GetProperty("id").GetString());
        Assert.Equal(JsonValueKind.Number, body.GetProperty("created").ValueKind);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Equal(expected, choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        var usage = body.GetProperty("usage");
        Assert.Equal(24, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(_server.Engine.Encode(prompt).Length, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 24, usage.GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task StreamedCompletionIsServerSentEventsEndingInDone()
    {
        const string prompt = "The little dog";
        using var response = await _server.PostJsonAsync("/v1/completions",
            $$"""{"prompt":"{{prompt}}","max_tokens":10,"temperature":0,"stream":true}""", cancellation: TestContext.Current.CancellationToken);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        string raw = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);

        var events = raw.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToList();
        Assert.All(chunks, c => Assert.Equal("text_completion", c.GetProperty("object").GetString()));
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());
        string text = string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()));
        Assert.Equal(TestServer.GreedyReference(TestPaths.Stories260K, engine => engine.Encode(prompt), 10), text);
        Assert.Equal("length", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.All(chunks[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind));
    }

    [Fact]
    public async Task StreamedChatChunksAreShapedAsOpenAIs()
    {
        using var response = await _server.PostJsonAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":6,"temperature":0,"stream":true}""",
            streamed: true, cancellation: TestContext.Current.CancellationToken);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        string raw = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        var events = raw.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        Assert.All(chunks, c => Assert.StartsWith("chatcmpl-", c.GetProperty("id").GetString()));
        var choices = chunks.Select(c => c.GetProperty("choices")[0]).ToList();
        // The first chunk carries the role, the last an empty delta and the finish reason; text in between.
        Assert.Equal("assistant", choices[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.Empty(choices[^1].GetProperty("delta").EnumerateObject());
        Assert.Equal("length", choices[^1].GetProperty("finish_reason").GetString());
        Assert.Equal(6, choices.Count(c => c.GetProperty("delta").TryGetProperty("content", out var t) && t.GetString()!.Length > 0));
        Assert.All(choices[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("finish_reason").ValueKind));
    }

    [Fact]
    public async Task StopStringsAndSeedsAreHonoured()
    {
        // A stop string ends the text before it, with finish_reason "stop".
        var stopped = await _server.PostForJsonAsync("/v1/completions",
            """{"prompt":"Once upon a time","max_tokens":60,"temperature":0,"stop":["Lily"]}""");
        var choice = stopped.GetProperty("choices")[0];
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.DoesNotContain("Lily", choice.GetProperty("text").GetString());
        Assert.EndsWith("named ", choice.GetProperty("text").GetString());

        // Sampling with a seed repeats; another seed (almost surely) does not.
        const string sampled = """{"prompt":"Once upon a time","max_tokens":40,"temperature":1.0,"top_k":0,"min_p":0,"seed":SEED}""";
        async Task<string> Text(int seed) => (await _server.PostForJsonAsync("/v1/completions", sampled.Replace("SEED", seed.ToString())))
            .GetProperty("choices")[0].GetProperty("text").GetString()!;
        string first = await Text(7);
        Assert.Equal(first, await Text(7));
        Assert.NotEqual(first, await Text(8));
    }

    [Fact]
    public async Task ModelsListsTheServedModelAndHealthIsOk()
    {
        using var list = await _server.Http.GetAsync("/v1/models", TestContext.Current.CancellationToken);
        var body = JsonDocument.Parse(await list.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement;
        Assert.Equal("list", body.GetProperty("object").GetString());
        var model = Assert.Single(body.GetProperty("data").EnumerateArray());
        Assert.Equal("stories260K.bin", model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());

        // The OpenAI client's model lookup goes to /v1/models/{id}.
        var modelClient = new OpenAI.Models.OpenAIModelClient(new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(_server.Address, "v1") });
        var info = await modelClient.GetModelAsync("stories260K.bin", TestContext.Current.CancellationToken);
        Assert.Equal("stories260K.bin", info.Value.Id);

        using var health = await _server.Http.GetAsync("/health", TestContext.Current.CancellationToken);
        Assert.Equal("ok", JsonDocument.Parse(await health.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement.GetProperty("status").GetString());
    }
}
