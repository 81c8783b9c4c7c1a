using System.Text.Json;

namespace SpeCache.Server;

/// <summary>POST /v1/completions: continue a raw prompt, as <c>specache generate</c> does.</summary>
sealed class CompletionsEndpoint : IResponseShape
{
    public static async Task<IResult> HandleAsync(HttpContext http, ServerState server)
    {
        try
        {
            var body = await GenerationRequest.ReadBodyAsync(http.Request, http.RequestAborted);
            int[] prompt = ReadPrompt(body, server);
            var request = GenerationRequest.Read(body, server);
            var options = request.Options(prompt.Length, server, "prompt");
            return await ResponseWriter.GenerateAsync(http, server, new CompletionsEndpoint(server.ModelId), prompt, request, options);
        }
        catch (RequestException e)
        {
            return e.ToResult();
        }
    }

    /// <summary>
    /// The prompt as tokens: a string (tokenized like <c>specache generate</c>'s prompt, BOS first if the
    /// model wants it), a list holding one string, or a list of token ids. Several prompts in one
    /// request are refused: one choice per request.
    /// </summary>
    static int[] ReadPrompt(JsonElement body, ServerState server)
    {
        if (!body.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            throw RequestException.Missing("prompt");
        var engine = server.Queue.Engine;
        int[] tokens;
        if (prompt.ValueKind == JsonValueKind.String)
        {
            tokens = engine.Encode(prompt.GetString()!);
        }
        else if (prompt.ValueKind == JsonValueKind.Array && prompt.GetArrayLength() == 1 && prompt[0].ValueKind == JsonValueKind.String)
        {
            tokens = engine.Encode(prompt[0].GetString()!);
        }
        else if (prompt.ValueKind == JsonValueKind.Array && prompt.EnumerateArray().All(t => t.ValueKind == JsonValueKind.Number))
        {
            tokens = prompt.EnumerateArray().Select(t => t.TryGetInt32(out int id) ? id : -1).ToArray();
            if (tokens.Any(t => t < 0 || t >= engine.Config.VocabSize))
                throw RequestException.BadValue("prompt", $"token ids must be between 0 and {engine.Config.VocabSize - 1}.");
        }
        else
        {
            throw RequestException.WrongType("prompt", "a string, an array with one string, or an array of token ids");
        }
        if (tokens.Length == 0)
            throw RequestException.BadValue("prompt", "the prompt is empty and the model has no BOS token to start from.");
        return tokens;
    }

    readonly string _model;

    CompletionsEndpoint(string model) => _model = model;

    public string IdPrefix => "cmpl";

    public object? FirstChunk(string id, long created) => null;

    public object TextChunk(string id, long created, string text) => Chunk(id, created, text, null);

    public object FinishChunk(string id, long created, string finishReason) => Chunk(id, created, "", finishReason);

    public object UsageChunk(string id, long created, object usage) =>
        new { Id = id, Object = "text_completion", Created = created, Model = _model, Choices = Array.Empty<object>(), Usage = usage };

    object Chunk(string id, long created, string text, string? finishReason) => new
    {
        Id = id,
        Object = "text_completion",
        Created = created,
        Model = _model,
        Choices = new[] { new { Text = text, Index = 0, Logprobs = (object?)null, FinishReason = finishReason } },
    };

    public object Response(string id, long created, string text, string finishReason, object usage) => new
    {
        Id = id,
        Object = "text_completion",
        Created = created,
        Model = _model,
        Choices = new[] { new { Text = text, Index = 0, Logprobs = (object?)null, FinishReason = finishReason } },
        Usage = usage,
    };
}
