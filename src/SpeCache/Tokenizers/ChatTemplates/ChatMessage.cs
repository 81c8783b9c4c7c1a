namespace SpeCache.Tokenizers.ChatTemplates;

/// <summary>
/// One turn of a conversation as a chat template sees it: <c>message.role</c> and <c>message.content</c>.
/// Tool calls, tool results with ids and multi-part (image) content are out of scope for now; a
/// template that reads <c>message.tool_calls</c> sees it as undefined.
/// </summary>
public sealed record ChatMessage(string Role, string Content);
