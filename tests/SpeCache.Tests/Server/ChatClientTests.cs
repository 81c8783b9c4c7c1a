using Microsoft.Extensions.AI;
using SpeCache.Extensions.AI;
using SpeCache.Generation;
using SpeCache.Tests.Generation;
using ChatTemplate = SpeCache.Tokenizers.ChatTemplates.ChatTemplate;

namespace SpeCache.Tests.Server;

/// <summary>The in-process <see cref="IChatClient"/>: the same replies as the engine, through Microsoft.Extensions.AI's types.</summary>
public sealed class ChatClientTests
{
    static readonly ChatTemplate Template = ChatTemplate.Parse(TestServer.ChatMlTemplate);

    static string Expected(int maxTokens) => TestServer.GreedyReference(TestPaths.Stories260K,
        engine => engine.EncodeChat(Template, [new("user", "Tell me a story.")]), maxTokens);

    [Fact]
    public async Task ResponseAndStreamingResponseAreTheEnginesGreedyReply()
    {
        using var engine = Engine.Load(TestPaths.Stories260K, new EngineOptions { Threads = 1 });
        using IChatClient client = new SpeCacheChatClient(engine, Template);
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 16 };

        var response = await client.GetResponseAsync("Tell me a story.", options, TestContext.Current.CancellationToken);
        Assert.Equal(Expected(16), response.Text);
        Assert.Equal(ChatRole.Assistant, response.Messages[0].Role);
        Assert.Equal("stories260K.bin", response.ModelId);
        Assert.True(response.FinishReason == ChatFinishReason.Length || response.FinishReason == ChatFinishReason.Stop);
        Assert.Equal(engine.EncodeChat(Template, [new("user", "Tell me a story.")]).Length, response.Usage!.InputTokenCount);
        Assert.True(response.Usage.OutputTokenCount is > 0 and <= 16);

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync("Tell me a story.", options, TestContext.Current.CancellationToken))
            updates.Add(update);
        Assert.True(updates.Count > 2);
        Assert.Equal(response.Text, string.Concat(updates.Select(u => u.Text)));
        // The updates fold back into the same response, usage and finish reason included.
        var folded = updates.ToChatResponse();
        Assert.Equal(response.Text, folded.Text);
        Assert.Equal(response.FinishReason, folded.FinishReason);
        Assert.Equal(response.Usage.OutputTokenCount, folded.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task CancellationStopsAStreamingResponse()
    {
        using var engine = Engine.Load(TestPaths.Llama2TinyRandom, new EngineOptions { Threads = 1 });
        using var queue = new GenerationQueue(engine);
        QueueHold.UntilAbandoned(queue, fromStep: 16); // 4000 tokens take a second: still running when cancelled
        using IChatClient client = new SpeCacheChatClient(queue, Template);
        using var cancel = new CancellationTokenSource();
        int received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync("hi", new ChatOptions { MaxOutputTokens = 4000 }, cancel.Token))
                if (++received == 3) cancel.Cancel();
        });
        Assert.Equal(1, queue.Cancelled);
        Assert.Equal(0, queue.Running);
        Assert.True(queue.GeneratedTokens < 4000);

        // The engine is free again for the next caller.
        var next = await client.GetResponseAsync("hi", new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        Assert.True(next.Usage!.OutputTokenCount is > 0 and <= 4);
    }

    [Fact]
    public void AModelWithoutATemplateNeedsOne()
    {
        using var engine = Engine.Load(TestPaths.Stories260K, new EngineOptions { Threads = 1 });
        Assert.Throws<ArgumentException>(() => new SpeCacheChatClient(engine));
        using var client = new SpeCacheChatClient(engine, Template);
        var metadata = (ChatClientMetadata)client.GetService(typeof(ChatClientMetadata))!;
        Assert.Equal("stories260K.bin", metadata.DefaultModelId);
        Assert.Same(engine, client.GetService(typeof(Engine)));
    }
}
