using System.Text;
using System.Text.Json;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Server;

/// <summary>POST /v1/chat/completions: messages rendered with the chat template, then generated after.</summary>
sealed class ChatCompletionsEndpoint : IResponseShape
{
    public static async Task<IResult> HandleAsync(HttpContext http, ServerState server)
    {
        try
        {
            var body = await GenerationRequest.ReadBodyAsync(http.Request, http.RequestAborted);
            var messages = ReadMessages(body);
            var request = GenerationRequest.Read(body, server);
            if (server.ChatTemplate == null)
                throw new RequestException(400, server.ChatTemplateProblem!, "messages", "chat_template_missing");
            int[] prompt;
            try
            {
                prompt = server.Queue.Engine.EncodeChat(server.ChatTemplate, messages);
            }
            catch (ChatTemplateException e) when (e.RaisedByTemplate)
            {
                // The template itself refused the conversation (e.g. roles that do not alternate).
                throw new RequestException(400, e.Message, "messages", "invalid_value");
            }
            var options = request.Options(prompt.Length, server, "messages");
            return await ResponseWriter.GenerateAsync(http, server, new ChatCompletionsEndpoint(server.ModelId), prompt, request, options);
        }
        catch (RequestException e)
        {
            return e.ToResult();
        }
    }

    /// <summary>
    /// The conversation: each message a role and a content that is a string or a list of text parts
    /// (other parts, such as images, are refused). A null content (an assistant turn that only called
    /// tools) renders as empty.
    /// </summary>
    static List<ChatMessage> ReadMessages(JsonElement body)
    {
        if (!body.TryGetProperty("messages", out var messages) || messages.ValueKind == JsonValueKind.Null)
            throw RequestException.Missing("messages");
        if (messages.ValueKind != JsonValueKind.Array)
            throw RequestException.WrongType("messages", "an array");
        if (messages.GetArrayLength() == 0)
            throw RequestException.BadValue("messages", "at least one message is required.");
        var list = new List<ChatMessage>();
        int index = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string at = $"messages[{index++}]";
            if (message.ValueKind != JsonValueKind.Object) throw RequestException.WrongType(at, "an object");
            string role = GenerationRequest.OptionalString(message, "role") ?? throw RequestException.Missing($"{at}.role");
            list.Add(new ChatMessage(role, ReadContent(message, at)));
        }
        return list;
    }

    static string ReadContent(JsonElement message, string at)
    {
        if (!message.TryGetProperty("content", out var content)) throw RequestException.Missing($"{at}.content");
        switch (content.ValueKind)
        {
            case JsonValueKind.String: return content.GetString()!;
            case JsonValueKind.Null: return "";
            case JsonValueKind.Array:
                var text = new StringBuilder();
                foreach (var part in content.EnumerateArray())
                {
                    if (part.ValueKind != JsonValueKind.Object || GenerationRequest.OptionalString(part, "type") != "text")
                        throw RequestException.BadValue($"{at}.content", "only text parts ({\"type\": \"text\", \"text\": ...}) are supported.");
                    text.Append(GenerationRequest.OptionalString(part, "text") ?? throw RequestException.Missing($"{at}.content.text"));
                }
                return text.ToString();
            default:
                throw RequestException.WrongType($"{at}.content", "a string or an array of text parts");
        }
    }

    readonly string _model;

    ChatCompletionsEndpoint(string model) => _model = model;

    public string IdPrefix => "chatcmpl";

    public object? FirstChunk(string id, long created) =>
        Chunk(id, created, new { Role = "assistant", Content = "" }, null);

    public object TextChunk(string id, long created, string text) =>
        Chunk(id, created, new { Content = text }, null);

    public object FinishChunk(string id, long created, string finishReason) =>
        Chunk(id, created, new { }, finishReason);

    public object UsageChunk(string id, long created, object usage) =>
        new { Id = id, Object = "chat.completion.chunk", Created = created, Model = _model, Choices = Array.Empty<object>(), Usage = usage };

    object Chunk(string id, long created, object delta, string? finishReason) => new
    {
        Id = id,
        Object = "chat.completion.chunk",
        Created = created,
        Model = _model,
        Choices = new[] { new { Index = 0, Delta = delta, Logprobs = (object?)null, FinishReason = finishReason } },
    };

    public object Response(string id, long created, string text, string finishReason, object usage) => new
    {
        Id = id,
        Object = "chat.completion",
        Created = created,
        Model = _model,
        Choices = new[]
        {
            new { Index = 0, Message = new { Role = "assistant", Content = text }, Logprobs = (object?)null, FinishReason = finishReason },
        },
        Usage = usage,
    };
}
