using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using SpeCache.Generation;
using SpeCache.ModelFiles.Synthetic;
using static Microsoft.Playwright.Assertions;

namespace SpeCache.Tests.Server;

/// <summary>
/// The web chat page at / in a real headless Chromium, against the real server: answers stream in
/// and match the API, the memory panel shows /v1/stats, errors are shown readably, Stop frees the cache.
/// </summary>
public sealed class WebChatPageTests(ChromiumBrowser chromium) : IClassFixture<ChromiumBrowser>
{
    /// <summary>Generous waits: the machine running the tests may be busy.</summary>
    const float Timeout = 60_000;

    /// <summary>
    /// Records each length the last answer's text has had, in order, as the page changes it; read
    /// with <c>window.answerLengths</c>. One entry per update the browser saw.
    /// </summary>
    const string RecordAnswerLengths = """
        () => {
          window.answerLengths = [];
          new MutationObserver(() => {
            const answers = document.querySelectorAll(".message.assistant .text");
            if (answers.length === 0) return;
            const length = answers[answers.length - 1].textContent.length;
            if (window.answerLengths.at(-1) !== length) window.answerLengths.push(length);
          }).observe(document.getElementById("conversation"), { childList: true, subtree: true, characterData: true });
        }
        """;

    static ILocator Stat(IPage page, string name) => page.Locator($"[data-stat='{name}']");

    static async Task<string?> StatValue(IPage page, string name) => await Stat(page, name).GetAttributeAsync("data-value");

    static async Task SendAsync(IPage page, string prompt, int? maxTokens = null, double? temperature = null, string? apiKey = null)
    {
        if (maxTokens is int n) await page.Locator("#max-tokens").FillAsync(n.ToString(CultureInfo.InvariantCulture));
        if (temperature is double t) await page.Locator("#temperature").FillAsync(t.ToString(CultureInfo.InvariantCulture));
        if (apiKey != null) await page.Locator("#api-key").FillAsync(apiKey);
        await page.Locator("#prompt").FillAsync(prompt);
        await page.Locator("#send").ClickAsync();
    }

    [Fact]
    public async Task TheAnswerStreamsInAndEqualsTheApisGreedyAnswer()
    {
        await using var server = await TestServer.StartAsync();
        var problems = new List<string>();
        var page = await chromium.OpenAsync(server.Address, problems);
        await page.EvaluateAsync(RecordAnswerLengths);

        const string prompt = "Tell me a story about a cat.";
        const int maxTokens = 60;
        await SendAsync(page, prompt, maxTokens, temperature: 0);
        var answer = page.Locator(".message.assistant").Last;
        await Expect(answer).ToHaveAttributeAsync("data-state", "done", new() { Timeout = Timeout });
        string shown = await answer.Locator(".text").TextContentAsync() ?? "";

        var direct = await server.PostForJsonAsync("/v1/chat/completions", JsonSerializer.Serialize(new
        {
            messages = new[] { new { role = "user", content = prompt } },
            max_tokens = maxTokens,
            temperature = 0,
        }));
        string expected = direct.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
        Assert.False(string.IsNullOrWhiteSpace(expected));
        Assert.Equal(expected, shown);

        // The answer grew in several steps as the tokens arrived, not in one piece at the end.
        int[] lengths = await page.EvaluateAsync<int[]>("() => window.answerLengths");
        int[] grown = [.. lengths.Where(l => l > 0)];
        Assert.True(grown.Length > 2, $"the answer was shown in {grown.Length} updates ({string.Join(", ", lengths)})");
        Assert.Equal(grown.Order(), grown);
        Assert.Equal(expected.Length, grown[^1]);

        // The user's message is shown as sent, and the answer's footer gives its token count.
        Assert.Equal(prompt, await page.Locator(".message.user .text").Last.TextContentAsync());
        int completionTokens = direct.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        await Expect(answer.Locator(".meta")).ToContainTextAsync($"{completionTokens} tokens");
        Assert.Empty(problems);
    }

    static string SlowModel() => SyntheticModel.Ensure(
        new SyntheticModelSpec(SyntheticShape.Find("llama-3.2-1b"), SyntheticModelSpec.Types["q8_0"], Seed: 0, Layers: 1, Vocab: 512),
        TestPaths.Scratch("webchat-models"), out _);

    [Fact]
    public async Task TheMemoryPanelShowsTheStatsWhileGeneratingAndStopFreesTheCache()
    {
        // One layer of the Llama-3.2-1B shape (random weights, 60 MB of Q8_0 read per token) takes
        // tens of seconds for 4000 tokens on one thread: long enough to watch the panel mid-answer
        // and press Stop. (The tiny vendored models now finish 4000 tokens in under 3 s.)
        const long budget = 64L << 20;
        await using var server = await TestServer.StartAsync(SlowModel(), batch: new BatchOptions { FastTierBudgetBytes = budget }, contextLength: 8192);
        var problems = new List<string>();
        var page = await chromium.OpenAsync(server.Address, problems);

        // Idle: the panel shows the server as /v1/stats has it.
        await Expect(Stat(page, "model")).ToHaveAttributeAsync("data-value", server.ModelId, new() { Timeout = Timeout });
        var idle = await StatsEndpointTests.StatsAsync(server);
        Assert.Equal(idle.GetProperty("kv_policy").GetString(), await StatValue(page, "kv_policy"));
        Assert.Equal("full", await StatValue(page, "kv_policy"));
        Assert.Equal(budget.ToString(CultureInfo.InvariantCulture), await StatValue(page, "kv_cache.fast_tier_budget_bytes"));
        await Expect(Stat(page, "kv_cache.fast_tier_budget_bytes")).ToHaveTextAsync("64.0 MiB");
        Assert.Equal("0", await StatValue(page, "kv_cache.fast_tier_bytes"));
        Assert.Equal(idle.GetProperty("context_length").GetInt32().ToString(CultureInfo.InvariantCulture), await StatValue(page, "context_length"));

        await SendAsync(page, "Hello", maxTokens: 4000, temperature: 0);
        var answer = page.Locator(".message.assistant").Last;
        await Expect(answer).ToHaveAttributeAsync("data-state", "streaming", new() { Timeout = Timeout });
        // The running request's cache appears in the panel within a poll or two.
        var positive = new Regex("^[1-9][0-9]*$");
        await Expect(Stat(page, "running")).ToHaveAttributeAsync("data-value", "1", new() { Timeout = Timeout });
        await Expect(Stat(page, "kv_cache.fast_tier_bytes")).ToHaveAttributeAsync("data-value", positive, new() { Timeout = Timeout });
        if (Environment.GetEnvironmentVariable("SPECACHE_WEBCHAT_SCREENSHOT") is { Length: > 0 } screenshot)
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = screenshot });

        // A request's cache is sized when it is admitted, so both tiers hold still while it runs:
        // the panel's figures are exactly the server's.
        string? fastShown = await StatValue(page, "kv_cache.fast_tier_bytes");
        string? hostShown = await StatValue(page, "kv_cache.host_tier_bytes");
        var running = await StatsEndpointTests.StatsAsync(server);
        Assert.True(running.GetProperty("running").GetInt32() == 1, "the request ended before the panel could be compared; it should run for seconds");
        Assert.Equal(running.GetProperty("kv_cache").GetProperty("fast_tier_bytes").GetInt64().ToString(CultureInfo.InvariantCulture), fastShown);
        Assert.Equal(running.GetProperty("kv_cache").GetProperty("host_tier_bytes").GetInt64().ToString(CultureInfo.InvariantCulture), hostShown);
        Assert.Equal(fastShown, await StatValue(page, "kv_cache.fast_tier_peak_bytes"));
        await Expect(Stat(page, "batch_size")).ToHaveAttributeAsync("data-value", "1", new() { Timeout = Timeout });

        // Stop aborts the fetch; the server sees the client go and frees the cache.
        await page.Locator("#stop").ClickAsync();
        await Expect(answer).ToHaveAttributeAsync("data-state", "stopped", new() { Timeout = Timeout });
        await Expect(Stat(page, "running")).ToHaveAttributeAsync("data-value", "0", new() { Timeout = Timeout });
        await Expect(Stat(page, "kv_cache.fast_tier_bytes")).ToHaveAttributeAsync("data-value", "0", new() { Timeout = Timeout });
        await Expect(Stat(page, "kv_cache.host_tier_bytes")).ToHaveAttributeAsync("data-value", "0", new() { Timeout = Timeout });
        Assert.Equal(fastShown, await StatValue(page, "kv_cache.fast_tier_peak_bytes"));
        var after = await StatsEndpointTests.StatsAsync(server);
        Assert.Equal(1, after.GetProperty("requests_cancelled").GetInt64());
        Assert.True(after.GetProperty("tokens_generated").GetInt64() < 4000, "the stopped request kept generating");
        Assert.False(string.IsNullOrEmpty(await answer.Locator(".text").TextContentAsync()), "nothing had streamed in before Stop");
        Assert.Empty(problems);
    }

    [Fact]
    public async Task AWrongApiKeyIsShownInThePageWithTheServersMessage()
    {
        await using var server = await TestServer.StartAsync(apiKey: "sk-test-123");
        var problems = new List<string>();
        // The page itself needs no key; without one, the panel says why it has no figures.
        var page = await chromium.OpenAsync(server.Address, problems);
        await Expect(page.Locator("#stats-status")).ToContainTextAsync("You didn't provide an API key", new() { Timeout = Timeout });

        await SendAsync(page, "Hello", maxTokens: 8, apiKey: "sk-wrong");
        var answer = page.Locator(".message.assistant").Last;
        await Expect(answer).ToHaveAttributeAsync("data-state", "error", new() { Timeout = Timeout });
        await Expect(answer.Locator(".error")).ToHaveTextAsync("Incorrect API key provided.");
        await Expect(page.Locator("#stats-status")).ToContainTextAsync("Incorrect API key provided.", new() { Timeout = Timeout });

        // With the right key, the same page is served and shows the server's figures.
        await SendAsync(page, "Hello", apiKey: "sk-test-123");
        await Expect(page.Locator(".message.assistant").Last).ToHaveAttributeAsync("data-state", "done", new() { Timeout = Timeout });
        await Expect(Stat(page, "model")).ToHaveAttributeAsync("data-value", server.ModelId, new() { Timeout = Timeout });
        await Expect(Stat(page, "tokens_generated")).ToHaveAttributeAsync("data-value", new Regex("^[1-8]$"), new() { Timeout = Timeout });
        Assert.Empty(problems);
    }

    [Fact]
    public async Task MaxTokensBeyondTheContextIsShownInThePageWithTheServersMessage()
    {
        await using var server = await TestServer.StartAsync();
        var problems = new List<string>();
        var page = await chromium.OpenAsync(server.Address, problems);
        await SendAsync(page, "Hello", maxTokens: 1000);
        var answer = page.Locator(".message.assistant").Last;
        await Expect(answer).ToHaveAttributeAsync("data-state", "error", new() { Timeout = Timeout });

        using var direct = await server.PostJsonAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hello"}],"max_tokens":1000,"stream":true}""",
            cancellation: TestContext.Current.CancellationToken);
        var error = await ValidationTests.AssertError(direct, HttpStatusCode.BadRequest, "max_tokens", "context_length_exceeded");
        string message = error.GetProperty("message").GetString()!;
        Assert.StartsWith("This model's maximum context length is 512 tokens.", message);
        await Expect(answer.Locator(".error")).ToHaveTextAsync(message);
        // A failed turn leaves the page usable: the next message is answered.
        await SendAsync(page, "Hello", maxTokens: 4);
        await Expect(page.Locator(".message.assistant").Last).ToHaveAttributeAsync("data-state", "done", new() { Timeout = Timeout });
        Assert.Empty(problems);
    }

    [Fact]
    public async Task TheKvPolicyFieldIsSentAsTheRequestsKvCache()
    {
        await using var server = await TestServer.StartAsync();
        var problems = new List<string>();
        var page = await chromium.OpenAsync(server.Address, problems);

        // A policy the server refuses: its message, naming kv_cache, is shown.
        await page.Locator("#kv-cache").FillAsync("specache:bits=3");
        await SendAsync(page, "Hello", maxTokens: 8, temperature: 0);
        var refused = page.Locator(".message.assistant").Last;
        await Expect(refused).ToHaveAttributeAsync("data-state", "error", new() { Timeout = Timeout });
        using var direct = await server.PostJsonAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"kv_cache":"specache:bits=3"}""",
            cancellation: TestContext.Current.CancellationToken);
        var error = await ValidationTests.AssertError(direct, HttpStatusCode.BadRequest, "kv_cache", "invalid_value");
        await Expect(refused.Locator(".error")).ToHaveTextAsync(error.GetProperty("message").GetString()!);

        // A policy it accepts: the answer is the one the API gives for the same kv_cache.
        const string policy = "kivi:bits=1,group=32,residual=32";
        await page.Locator("#kv-cache").FillAsync(policy);
        await SendAsync(page, "Tell me a story.", maxTokens: 100, temperature: 0);
        var answer = page.Locator(".message.assistant").Last;
        await Expect(answer).ToHaveAttributeAsync("data-state", "done", new() { Timeout = Timeout });
        var expected = await server.PostForJsonAsync("/v1/chat/completions", JsonSerializer.Serialize(new
        {
            messages = new[] { new { role = "user", content = "Tell me a story." } },
            max_tokens = 100,
            temperature = 0,
            kv_cache = policy,
        }));
        Assert.Equal(expected.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(), await answer.Locator(".text").TextContentAsync());
        await Expect(answer.Locator(".meta")).ToContainTextAsync($"KV {policy}");
        Assert.Empty(problems);
    }
}

/// <summary>GET / over plain HTTP: the page is served (without the key), everything else as before.</summary>
public sealed class WebChatPageServingTests
{
    [Fact]
    public async Task ThePageIsServedWithoutTheKeyAndLoadsNothingFromElsewhere()
    {
        await using var server = await TestServer.StartAsync(apiKey: "sk-test-123");
        using var response = await server.Http.GetAsync("/", TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("utf-8", response.Content.Headers.ContentType?.CharSet);
        Assert.Contains("connect-src 'self'", response.Headers.GetValues("Content-Security-Policy").Single());
        string html = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.Contains("/v1/chat/completions", html);
        Assert.Contains("/v1/stats", html);
        // Self-contained: no external scripts, styles or fonts.
        Assert.DoesNotMatch(new Regex("""(src|href)\s*=\s*["']?(https?:)?//""", RegexOptions.IgnoreCase), html);

        // The key still guards everything else but /health.
        using var other = await server.Http.GetAsync("/v1/models", TestContext.Current.CancellationToken);
        await ValidationTests.AssertError(other, HttpStatusCode.Unauthorized, null, "invalid_api_key");
    }

    [Fact]
    public async Task OtherPathsUnderTheRootAreStillJsonErrors()
    {
        await using var server = await TestServer.StartAsync();
        using var missing = await server.Http.GetAsync("/index.html", TestContext.Current.CancellationToken);
        await ValidationTests.AssertError(missing, HttpStatusCode.NotFound, null);
        using var posted = await server.PostJsonAsync("/", "{}", cancellation: TestContext.Current.CancellationToken);
        await ValidationTests.AssertError(posted, HttpStatusCode.MethodNotAllowed, null);
    }
}
