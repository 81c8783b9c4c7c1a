using SpeCache.Generation;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Server;

/// <summary>How <c>specache serve</c> listens and what a request gets when it leaves a field out.</summary>
public sealed record ServerOptions
{
    /// <summary>Address to listen on: loopback unless asked otherwise, so that a model is not exposed by accident.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>TCP port; 0 lets the system choose a free one (see <see cref="SpeCacheServer.Start"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>When set, every endpoint but /health and the web chat page (/) requires <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }

    /// <summary>The name clients pass as <c>model</c>; the model file's (or folder's) name.</summary>
    public required string ModelId { get; init; }

    /// <summary>A chat template to use instead of the model's own (<c>--chat-template</c>).</summary>
    public ChatTemplate? ChatTemplate { get; init; }

    /// <summary>Sampling for fields a request leaves out; llama.cpp's defaults unless the command line says otherwise.</summary>
    public SamplingOptions Sampling { get; init; } = new();

    /// <summary>Tokens to generate when a request gives no max_tokens; null means up to the end of the context.</summary>
    public int? DefaultMaxTokens { get; init; }
}
