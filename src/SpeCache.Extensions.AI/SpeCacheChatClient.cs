using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using SpeCache.Generation;
using ChatTemplate = SpeCache.Tokenizers.ChatTemplates.ChatTemplate;
using TemplateMessage = SpeCache.Tokenizers.ChatTemplates.ChatMessage;

namespace SpeCache.Extensions.AI;

/// <summary>
/// An <see cref="IChatClient"/> that runs the engine in this process: messages are rendered with the
/// model's chat template (or the one given) and generated through a <see cref="GenerationQueue"/>, so
/// concurrent callers take turns on the one engine. <see cref="ChatOptions"/> maps to sampling as the
/// HTTP server maps OpenAI's fields: MaxOutputTokens, Temperature, TopP, TopK, Seed, StopSequences.
/// </summary>
public sealed class SpeCacheChatClient : IChatClient
{
    readonly GenerationQueue _queue;
    readonly bool _ownsQueue;
    readonly ChatTemplate _template;
    readonly SamplingOptions _defaults;
    readonly ChatClientMetadata _metadata;

    /// <summary>A client over <paramref name="engine"/> with its own queue (the caller still owns the engine).</summary>
    public SpeCacheChatClient(Engine engine, ChatTemplate? template = null, string? modelId = null, SamplingOptions? defaults = null)
        : this(new GenerationQueue(engine), template, modelId, defaults)
    {
        _ownsQueue = true;
    }

    /// <summary>A client sharing <paramref name="queue"/> (for example with the HTTP server) so that both take turns.</summary>
    public SpeCacheChatClient(GenerationQueue queue, ChatTemplate? template = null, string? modelId = null, SamplingOptions? defaults = null)
    {
        _queue = queue;
        _template = template ?? queue.Engine.LoadChatTemplate()
            ?? throw new ArgumentException("the model has no chat template: pass one", nameof(template));
        _defaults = defaults ?? new SamplingOptions();
        ModelId = modelId ?? Path.GetFileName(queue.Engine.File.Path.TrimEnd('/', Path.DirectorySeparatorChar));
        _metadata = new ChatClientMetadata("specache", null, ModelId);
    }

    public string ModelId { get; }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (prompt, generation) = Prepare(messages, options);
        var stats = new GenerationStats();
        var text = new System.Text.StringBuilder();
        await foreach (string piece in _queue.RunAsync(prompt, generation, stats, cancellationToken).ConfigureAwait(false))
            text.Append(piece);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()))
        {
            ResponseId = NewId(),
            ModelId = ModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = FinishReason(stats),
            Usage = Usage(stats),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (prompt, generation) = Prepare(messages, options);
        var stats = new GenerationStats();
        string id = NewId();
        var created = DateTimeOffset.UtcNow;
        await foreach (string piece in _queue.RunAsync(prompt, generation, stats, cancellationToken).ConfigureAwait(false))
            yield return new ChatResponseUpdate(ChatRole.Assistant, piece) { ResponseId = id, MessageId = id, ModelId = ModelId, CreatedAt = created };
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(Usage(stats))])
        {
            ResponseId = id,
            MessageId = id,
            ModelId = ModelId,
            CreatedAt = created,
            FinishReason = FinishReason(stats),
        };
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey != null ? null
        : serviceType == typeof(ChatClientMetadata) ? _metadata
        : serviceType.IsInstanceOfType(_queue.Engine) ? _queue.Engine
        : serviceType.IsInstanceOfType(this) ? this
        : null;

    public void Dispose()
    {
        if (_ownsQueue) _queue.Dispose();
    }

    (int[] Prompt, GenerationOptions Options) Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var engine = _queue.Engine;
        var conversation = messages.Select(m => new TemplateMessage(m.Role.Value, m.Text)).ToList();
        int[] prompt = engine.EncodeChat(_template, conversation);
        var sampling = _defaults with
        {
            Temperature = options?.Temperature ?? _defaults.Temperature,
            TopP = options?.TopP ?? _defaults.TopP,
            TopK = options?.TopK ?? _defaults.TopK,
            Seed = options?.Seed is long seed ? unchecked((ulong)seed) : _defaults.Seed,
        };
        var generation = new GenerationOptions
        {
            // Without a limit, the reply may run to the end of the context.
            MaxTokens = options?.MaxOutputTokens ?? Math.Max(engine.ContextLength - prompt.Length, 0),
            Sampling = sampling,
            StopStrings = options?.StopSequences?.ToList() ?? [],
        };
        return (prompt, generation);
    }

    static ChatFinishReason FinishReason(GenerationStats stats) =>
        stats.FinishReason is Generation.FinishReason.Length or Generation.FinishReason.ContextFull ? ChatFinishReason.Length : ChatFinishReason.Stop;

    static UsageDetails Usage(GenerationStats stats) => new()
    {
        InputTokenCount = stats.PromptTokens,
        OutputTokenCount = stats.GeneratedTokens,
        TotalTokenCount = stats.PromptTokens + stats.GeneratedTokens,
    };

    static string NewId() => $"chatcmpl-{Guid.NewGuid():N}";
}
