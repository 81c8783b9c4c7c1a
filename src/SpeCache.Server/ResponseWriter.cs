using System.Text;
using System.Text.Json;
using SpeCache.Generation;

namespace SpeCache.Server;

/// <summary>
/// The JSON objects of one endpoint's responses: the whole response, and the chunks of a stream.
/// The chat and text completion endpoints differ only in these shapes.
/// </summary>
interface IResponseShape
{
    string IdPrefix { get; }
    /// <summary>A chunk sent before any text (chat sends the role), or null.</summary>
    object? FirstChunk(string id, long created);
    object TextChunk(string id, long created, string text);
    object FinishChunk(string id, long created, string finishReason);
    /// <summary>The chunk with the usage that stream_options.include_usage asks for.</summary>
    object UsageChunk(string id, long created, object usage);
    object Response(string id, long created, string text, string finishReason, object usage);
}

/// <summary>Runs a checked request through the queue and writes it back whole or as server-sent events.</summary>
static class ResponseWriter
{
    static readonly byte[] Done = Encoding.UTF8.GetBytes("data: [DONE]\n\n");

    public static async Task<IResult> GenerateAsync(HttpContext http, ServerState server, IResponseShape shape,
        int[] prompt, GenerationRequest request, GenerationOptions options)
    {
        string id = ServerState.NewId(shape.IdPrefix);
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var stats = new GenerationStats();
        // The client going away cancels the request: it leaves the queue, or its generation stops at the next token.
        var cancellation = http.RequestAborted;
        try
        {
            if (!request.Stream)
            {
                var text = new StringBuilder();
                await foreach (string piece in server.Queue.RunAsync(prompt, options, stats, cancellation, request.KvCache))
                    text.Append(piece);
                return Results.Json(shape.Response(id, created, text.ToString(), ServerState.FinishReason(stats), ServerState.Usage(stats)), Json.Options);
            }

            // Queued before the status line goes out, so that a request the queue refuses gets a 4xx.
            var pieces = server.Queue.RunAsync(prompt, options, stats, cancellation, request.KvCache);
            var response = http.Response;
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "text/event-stream";
            response.Headers.CacheControl = "no-cache";
            // Tell buffering proxies (nginx) to pass each event on at once.
            response.Headers["X-Accel-Buffering"] = "no";
            if (shape.FirstChunk(id, created) is { } first) await WriteEventAsync(response, first, cancellation);
            try
            {
                await foreach (string piece in pieces)
                    await WriteEventAsync(response, shape.TextChunk(id, created, piece), cancellation);
            }
            catch (Exception e) when (e is not OperationCanceledException && !cancellation.IsCancellationRequested)
            {
                // The status line is gone; the error travels as an event, as llama-server does.
                await WriteEventAsync(response, ErrorBody(e), cancellation);
                return Results.Empty;
            }
            await WriteEventAsync(response, shape.FinishChunk(id, created, ServerState.FinishReason(stats)), cancellation);
            if (request.IncludeUsage) await WriteEventAsync(response, shape.UsageChunk(id, created, ServerState.Usage(stats)), cancellation);
            await response.Body.WriteAsync(Done, cancellation);
            await response.Body.FlushAsync(cancellation);
            return Results.Empty;
        }
        catch (Exception) when (cancellation.IsCancellationRequested)
        {
            // Nobody is listening any more (writing to the closed connection may have failed too);
            // the queue has already stopped the generation.
            return Results.Empty;
        }
        catch (Exception e) when (!http.Response.HasStarted)
        {
            return e is RequestException r ? r.ToResult() : ErrorResult(e);
        }
    }

    static async Task WriteEventAsync(HttpResponse response, object payload, CancellationToken cancellation)
    {
        // One event per token, flushed at once, so the client sees each token as it is made.
        await response.WriteAsync($"data: {JsonSerializer.Serialize(payload, Json.Options)}\n\n", cancellation);
        await response.Body.FlushAsync(cancellation);
    }

    /// <summary>Errors from the engine after a request was accepted: bad sampling values are the client's, the rest the server's.</summary>
    static object ErrorBody(Exception e) => e switch
    {
        ArgumentException or PromptTooLongException => OpenAiError.Body(e.Message, null, "invalid_value"),
        _ => OpenAiError.Body($"The server failed while generating: {e.Message}", null, null, "server_error"),
    };

    static IResult ErrorResult(Exception e) => e switch
    {
        KvBudgetExceededException => OpenAiError.Result(400, e.Message, "max_tokens", "kv_budget_exceeded"),
        ArgumentException or PromptTooLongException => OpenAiError.Result(400, e.Message, null, "invalid_value"),
        _ => OpenAiError.Result(500, $"The server failed while generating: {e.Message}", null, null, "server_error"),
    };
}
