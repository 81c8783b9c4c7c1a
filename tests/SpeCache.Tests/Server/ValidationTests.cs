using System.Net;
using System.Text;
using System.Text.Json;

namespace SpeCache.Tests.Server;

/// <summary>Every refused request is a 4xx with OpenAI's error shape, never a stack trace or an HTML page.</summary>
public sealed class ValidationTests : IAsyncLifetime
{
    TestServer _server = null!;

    public async ValueTask InitializeAsync() => _server = await TestServer.StartAsync();

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    /// <summary>Checks <c>{"error":{"message","type","param","code"}}</c> and returns the error object.</summary>
    internal static async Task<JsonElement> AssertError(HttpResponseMessage response, HttpStatusCode status, string? param, string? code = null)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {body}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.DoesNotContain("   at ", body);
        var error = JsonDocument.Parse(body).RootElement.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.Equal(status == HttpStatusCode.InternalServerError ? "server_error" : "invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").ValueKind == JsonValueKind.Null ? null : error.GetProperty("param").GetString());
        // code is present always; null where OpenAI has none.
        var codeValue = error.GetProperty("code");
        if (code != null) Assert.Equal(code, codeValue.GetString());
        return error;
    }

    public static TheoryData<string, string, HttpStatusCode, string?, string?> BadRequests => new()
    {
        // path, body, status, param, code
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}""", HttpStatusCode.BadRequest, null, "invalid_json" },
        { "/v1/completions", "not json at all", HttpStatusCode.BadRequest, null, "invalid_json" },
        { "/v1/completions", "[1, 2]", HttpStatusCode.BadRequest, null, "invalid_json" },
        { "/v1/chat/completions", """{"model":"stories260K.bin"}""", HttpStatusCode.BadRequest, "messages", "missing_required_parameter" },
        { "/v1/chat/completions", """{"messages":[]}""", HttpStatusCode.BadRequest, "messages", "invalid_value" },
        { "/v1/chat/completions", """{"messages":"hi"}""", HttpStatusCode.BadRequest, "messages", "invalid_type" },
        { "/v1/chat/completions", """{"messages":[{"content":"hi"}]}""", HttpStatusCode.BadRequest, "messages[0].role", "missing_required_parameter" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", HttpStatusCode.BadRequest, "messages[0].content", "invalid_value" },
        { "/v1/completions", """{"model":"stories260K.bin","max_tokens":4}""", HttpStatusCode.BadRequest, "prompt", "missing_required_parameter" },
        { "/v1/completions", """{"prompt":{"text":"hi"}}""", HttpStatusCode.BadRequest, "prompt", "invalid_type" },
        { "/v1/completions", """{"prompt":[1, 99999]}""", HttpStatusCode.BadRequest, "prompt", "invalid_value" },
        { "/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", HttpStatusCode.NotFound, "model", "model_not_found" },
        { "/v1/completions", """{"model":"gpt-3.5-turbo-instruct","prompt":"hi"}""", HttpStatusCode.NotFound, "model", "model_not_found" },
        { "/v1/completions", """{"prompt":"Once upon a time","max_tokens":600}""", HttpStatusCode.BadRequest, "max_tokens", "context_length_exceeded" },
        { "/v1/completions", """{"prompt":"Once upon a time","max_completion_tokens":509}""", HttpStatusCode.BadRequest, "max_completion_tokens", "context_length_exceeded" },
        { "/v1/completions", """{"prompt":"PROMPT_TOO_LONG"}""", HttpStatusCode.BadRequest, "prompt", "context_length_exceeded" },
        { "/v1/completions", """{"prompt":"hi","temperature":-0.5}""", HttpStatusCode.BadRequest, "temperature", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","kv_cache":"nonesuch"}""", HttpStatusCode.BadRequest, "kv_cache", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","kv_cache":"specache:bits=3"}""", HttpStatusCode.BadRequest, "kv_cache", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","kv_cache":7}""", HttpStatusCode.BadRequest, "kv_cache", "invalid_type" },
        { "/v1/completions", """{"prompt":"hi","temperature":"hot"}""", HttpStatusCode.BadRequest, "temperature", "invalid_type" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"top_p":0}""", HttpStatusCode.BadRequest, "top_p", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","top_p":1.5}""", HttpStatusCode.BadRequest, "top_p", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","max_tokens":-1}""", HttpStatusCode.BadRequest, "max_tokens", "invalid_value" },
        { "/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":-5}""", HttpStatusCode.BadRequest, "max_completion_tokens", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","min_p":2}""", HttpStatusCode.BadRequest, "min_p", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","repeat_penalty":0}""", HttpStatusCode.BadRequest, "repeat_penalty", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","repetition_penalty":-1}""", HttpStatusCode.BadRequest, "repetition_penalty", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","stop":5}""", HttpStatusCode.BadRequest, "stop", "invalid_type" },
        { "/v1/completions", """{"prompt":"hi","n":3}""", HttpStatusCode.BadRequest, "n", "invalid_value" },
        { "/v1/completions", """{"prompt":"hi","stream":"yes"}""", HttpStatusCode.BadRequest, "stream", "invalid_type" },
    };

    [Fact]
    public async Task AKvPolicyThatCannotHoldTheModelIsRefusedBeforeTheStreamStarts()
    {
        // llama-2-tiny-random has heads of 4 channels, which no KIVI group tiles: refused as a 400
        // naming kv_cache, not accepted and then failed inside the event stream.
        await using var server = await TestServer.StartAsync(TestPaths.Llama2TinyRandom, chatTemplate: false);
        using var response = await server.PostJsonAsync("/v1/completions", """{"prompt":"hi","stream":true,"kv_cache":"specache:bits=1"}""",
            cancellation: TestContext.Current.CancellationToken);
        var error = await AssertError(response, HttpStatusCode.BadRequest, "kv_cache", "invalid_value");
        Assert.Contains("head size that is a multiple of 8", error.GetProperty("message").GetString());
    }

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task BadRequestIsAnOpenAiError(string path, string body, HttpStatusCode status, string? param, string? code)
    {
        // A prompt of 600 words is more than stories260K's 512-token context on its own.
        body = body.Replace("PROMPT_TOO_LONG", string.Join(' ', Enumerable.Repeat("cat", 600)));
        using var response = await _server.PostJsonAsync(path, body, cancellation: TestContext.Current.CancellationToken);
        await AssertError(response, status, param, code);
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData(null)]
    public async Task WrongContentTypeIs415(string? contentType)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new ByteArrayContent(Encoding.UTF8.GetBytes("""{"prompt":"hi","max_tokens":2}""")),
        };
        if (contentType != null) request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(contentType);
        using var response = await _server.Http.SendAsync(request, TestContext.Current.CancellationToken);
        await AssertError(response, HttpStatusCode.UnsupportedMediaType, null, "unsupported_media_type");
    }

    [Fact]
    public async Task JsonWithACharsetIsAccepted()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("""{"prompt":"hi","max_tokens":2}""", Encoding.UTF8, "application/json"),
        };
        Assert.Equal("utf-8", request.Content.Headers.ContentType?.CharSet);
        using var response = await _server.Http.SendAsync(request, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task UnknownPathsAndMethodsAreJsonErrors()
    {
        using var unknown = await _server.Http.GetAsync("/v1/embeddings", TestContext.Current.CancellationToken);
        await AssertError(unknown, HttpStatusCode.NotFound, null);
        using var wrongMethod = await _server.Http.GetAsync("/v1/chat/completions", TestContext.Current.CancellationToken);
        await AssertError(wrongMethod, HttpStatusCode.MethodNotAllowed, null);
        using var unknownModel = await _server.Http.GetAsync("/v1/models/gpt-4o", TestContext.Current.CancellationToken);
        await AssertError(unknownModel, HttpStatusCode.NotFound, "model", "model_not_found");
    }

    [Fact]
    public async Task ModelNameIsOptionalAndTheFileNameIsAccepted()
    {
        using var named = await _server.PostJsonAsync("/v1/completions", """{"model":"stories260K.bin","prompt":"hi","max_tokens":2}""", cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, named.StatusCode);
        using var unnamed = await _server.PostJsonAsync("/v1/completions", """{"prompt":"hi","max_tokens":2}""", cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, unnamed.StatusCode);
    }
}

/// <summary>A server started with <c>--api-key</c>, and one over a model without a chat template.</summary>
public sealed class ApiKeyAndTemplateTests
{
    [Fact]
    public async Task ApiKeyIsRequiredOnEveryEndpointButHealth()
    {
        await using var server = await TestServer.StartAsync(apiKey: "sk-test-123");
        const string body = """{"prompt":"hi","max_tokens":2}""";

        using var missing = await server.PostJsonAsync("/v1/completions", body, cancellation: TestContext.Current.CancellationToken);
        await ValidationTests.AssertError(missing, HttpStatusCode.Unauthorized, null, "invalid_api_key");
        using var wrong = await server.PostJsonAsync("/v1/completions", body, apiKey: "sk-wrong", cancellation: TestContext.Current.CancellationToken);
        await ValidationTests.AssertError(wrong, HttpStatusCode.Unauthorized, null, "invalid_api_key");
        using var models = await server.Http.GetAsync("/v1/models", TestContext.Current.CancellationToken);
        await ValidationTests.AssertError(models, HttpStatusCode.Unauthorized, null, "invalid_api_key");

        using var right = await server.PostJsonAsync("/v1/completions", body, apiKey: "sk-test-123", cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
        using var health = await server.Http.GetAsync("/health", TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }

    [Fact]
    public async Task OpenAiClientWithTheWrongKeyGetsAnAuthenticationError()
    {
        await using var server = await TestServer.StartAsync(apiKey: "sk-test-123");
        var client = new OpenAI.Chat.ChatClient(server.ModelId, new System.ClientModel.ApiKeyCredential("sk-wrong"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(server.Address, "v1") });
        var error = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() =>
            client.CompleteChatAsync([new OpenAI.Chat.UserChatMessage("hi")], cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal(401, error.Status);

        var good = new OpenAI.Chat.ChatClient(server.ModelId, new System.ClientModel.ApiKeyCredential("sk-test-123"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(server.Address, "v1") });
        var reply = await good.CompleteChatAsync([new OpenAI.Chat.UserChatMessage("hi")],
            new OpenAI.Chat.ChatCompletionOptions { MaxOutputTokenCount = 4 }, TestContext.Current.CancellationToken);
        Assert.True(reply.Value.Usage.OutputTokenCount is > 0 and <= 4);
    }

    [Fact]
    public async Task ChatWithoutATemplateIsAClear400AndCompletionsStillWork()
    {
        await using var server = await TestServer.StartAsync(chatTemplate: false);
        using var chat = await server.PostJsonAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}]}""", cancellation: TestContext.Current.CancellationToken);
        var error = await ValidationTests.AssertError(chat, HttpStatusCode.BadRequest, "messages", "chat_template_missing");
        Assert.Contains("--chat-template", error.GetProperty("message").GetString());

        using var completion = await server.PostJsonAsync("/v1/completions", """{"prompt":"hi","max_tokens":2}""", cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
    }

    [Fact]
    public async Task WithoutMaxTokensTheServerDefaultIsCutToTheRoomLeft()
    {
        await using var server = await TestServer.StartAsync(defaultMaxTokens: 8);
        var shortPrompt = await server.PostForJsonAsync("/v1/completions", """{"prompt":"Once upon a time","ignore_eos":true}""");
        Assert.Equal(8, shortPrompt.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // 505 prompt tokens in a 512-token context leave room for 7, fewer than the default 8.
        string prompt = string.Join(' ', Enumerable.Repeat("cat", 600));
        int promptTokens = server.Engine.Encode(prompt).Length;
        Assert.True(promptTokens > 512, $"{promptTokens}");
        var ids = server.Engine.Encode(prompt)[..505];
        var longPrompt = await server.PostForJsonAsync("/v1/completions", $$"""{"prompt":[{{string.Join(',', ids)}}],"ignore_eos":true}""");
        Assert.Equal(505, longPrompt.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(7, longPrompt.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("length", longPrompt.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }
}
