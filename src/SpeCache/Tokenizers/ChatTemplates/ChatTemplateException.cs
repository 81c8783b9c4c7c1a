namespace SpeCache.Tokenizers.ChatTemplates;

/// <summary>
/// A template that cannot be parsed, fails while rendering, or calls <c>raise_exception(...)</c>
/// (then <see cref="RaisedByTemplate"/> is true: the template rejected the conversation, e.g. roles
/// that do not alternate). Constructs we do not implement throw <see cref="NotSupportedException"/>.
/// Messages start with "chat template" and end with the line and column in the template.
/// </summary>
public sealed class ChatTemplateException(string message, bool raisedByTemplate = false) : Exception(message)
{
    public bool RaisedByTemplate { get; } = raisedByTemplate;
}
