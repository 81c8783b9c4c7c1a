using SpeCache.Generation;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Server;

/// <summary>What every endpoint shares: the engine's queue, the options, and the chat template in use.</summary>
sealed class ServerState
{
    public ServerState(GenerationQueue queue, ServerOptions options)
    {
        Queue = queue;
        Options = options;
        if (options.ChatTemplate != null)
        {
            ChatTemplate = options.ChatTemplate;
        }
        else
        {
            // A model template we cannot parse must not stop the server: /v1/completions still works,
            // and chat requests say why they cannot be served.
            try
            {
                ChatTemplate = queue.Engine.LoadChatTemplate();
            }
            catch (Exception e) when (e is ChatTemplateException or NotSupportedException)
            {
                ChatTemplateProblem = $"The model's chat template cannot be used ({e.Message}). Start the server with --chat-template FILE.";
            }
        }
        ChatTemplateProblem ??= ChatTemplate == null
            ? "This model has no chat template, so /v1/chat/completions cannot render messages. Use /v1/completions with a prompt, or start the server with --chat-template FILE."
            : null;
    }

    public GenerationQueue Queue { get; }
    public ServerOptions Options { get; }
    public string ModelId => Options.ModelId;
    public ChatTemplate? ChatTemplate { get; }
    /// <summary>Why chat requests cannot be served, or null when they can.</summary>
    public string? ChatTemplateProblem { get; }
    /// <summary>When the server started, as Unix seconds (the model's <c>created</c>).</summary>
    public long Started { get; } = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public static string FinishReason(GenerationStats stats) => stats.FinishReason switch
    {
        Generation.FinishReason.Length or Generation.FinishReason.ContextFull => "length",
        _ => "stop",
    };

    public static object Usage(GenerationStats stats) => new
    {
        PromptTokens = stats.PromptTokens,
        CompletionTokens = stats.GeneratedTokens,
        TotalTokens = stats.PromptTokens + stats.GeneratedTokens,
    };

    public static string NewId(string prefix) => $"{prefix}-{Guid.NewGuid():N}";
}
