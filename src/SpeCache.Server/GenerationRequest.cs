using System.Text.Json;
using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache;

namespace SpeCache.Server;

/// <summary>
/// The fields /v1/chat/completions and /v1/completions share: model, length, sampling, stop, stream.
/// Read and checked at the edge, so that a bad value is a 400 naming its field before any work starts.
/// </summary>
sealed class GenerationRequest
{
    public int? MaxTokens { get; private init; }
    /// <summary>Which of max_completion_tokens and max_tokens the request used, to name it in errors.</summary>
    string MaxTokensParam { get; init; } = "max_tokens";
    public required SamplingOptions Sampling { get; init; }
    public required IReadOnlyList<string> Stop { get; init; }
    public bool IgnoreEos { get; private init; }
    public bool Stream { get; private init; }
    /// <summary>stream_options.include_usage: one more chunk with the usage before [DONE].</summary>
    public bool IncludeUsage { get; private init; }
    /// <summary>kv_cache: this request's KV cache policy instead of the server's (null: the server's).</summary>
    public KvCacheOptions? KvCache { get; private init; }

    /// <summary>Reads the body of a POST as one JSON object; a wrong content type or broken JSON is a 4xx.</summary>
    public static async Task<JsonElement> ReadBodyAsync(HttpRequest request, CancellationToken cancellation)
    {
        if (!request.HasJsonContentType())
            throw new RequestException(415, $"Unsupported Content-Type '{request.ContentType}': send the request body as application/json.", code: "unsupported_media_type");
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(request.Body, default, cancellation);
        }
        catch (JsonException e)
        {
            throw new RequestException(400, $"We could not parse the JSON body of your request: {e.Message}", code: "invalid_json");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new RequestException(400, "The request body must be a JSON object.", code: "invalid_json");
            return document.RootElement.Clone();
        }
    }

    public static GenerationRequest Read(JsonElement body, ServerState server)
    {
        string? model = OptionalString(body, "model");
        if (model != null && model != server.ModelId)
            throw new RequestException(404, $"The model '{model}' does not exist. This server serves '{server.ModelId}'.", "model", "model_not_found");

        // max_completion_tokens is the newer name (the OpenAI client sends it); max_tokens the older one.
        int? maxTokens = OptionalInt(body, "max_completion_tokens") ?? OptionalInt(body, "max_tokens");
        string maxTokensParam = OptionalInt(body, "max_completion_tokens") != null ? "max_completion_tokens" : "max_tokens";
        if (maxTokens < 0)
            throw RequestException.BadValue(maxTokensParam, $"{maxTokens} is below the minimum of 0.");

        int? n = OptionalInt(body, "n");
        if (n is not null and not 1)
            throw RequestException.BadValue("n", "this server generates one choice per request (n = 1).");

        var defaults = server.Options.Sampling;
        float temperature = OptionalFloat(body, "temperature") ?? defaults.Temperature;
        if (!(temperature >= 0) || float.IsInfinity(temperature))
            throw RequestException.BadValue("temperature", $"{temperature} must be >= 0 (0 is greedy).");
        float topP = OptionalFloat(body, "top_p") ?? defaults.TopP;
        if (!(topP > 0 && topP <= 1))
            throw RequestException.BadValue("top_p", $"{topP} must be in (0, 1].");
        // llama-server's extensions. A negative top_k means "off", as it does in llama.cpp.
        int topK = Math.Max(OptionalInt(body, "top_k") ?? defaults.TopK, 0);
        float minP = OptionalFloat(body, "min_p") ?? defaults.MinP;
        if (!(minP >= 0 && minP <= 1))
            throw RequestException.BadValue("min_p", $"{minP} must be in [0, 1].");
        string penaltyName = body.TryGetProperty("repetition_penalty", out _) ? "repetition_penalty" : "repeat_penalty";
        float penalty = OptionalFloat(body, penaltyName) ?? defaults.RepetitionPenalty;
        if (!(penalty > 0) || float.IsInfinity(penalty))
            throw RequestException.BadValue(penaltyName, $"{penalty} must be > 0 (1 is off).");
        int lastN = OptionalInt(body, "repeat_last_n") ?? defaults.RepetitionLastN;
        if (lastN < -1)
            throw RequestException.BadValue("repeat_last_n", $"{lastN} must be >= -1.");
        long? seed = OptionalLong(body, "seed");
        // frequency_penalty, presence_penalty, logit_bias, user and the like are accepted and not applied.

        var kvCache = ReadKvCache(body, server);

        var streamOptions = body.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object ? so : default;
        return new GenerationRequest
        {
            MaxTokens = maxTokens,
            MaxTokensParam = maxTokensParam,
            Sampling = new SamplingOptions
            {
                Temperature = temperature,
                TopP = topP,
                TopK = topK,
                MinP = minP,
                RepetitionPenalty = penalty,
                RepetitionLastN = lastN,
                Seed = seed is long s ? unchecked((ulong)s) : defaults.Seed,
            },
            Stop = ReadStop(body),
            IgnoreEos = OptionalBool(body, "ignore_eos") ?? false,
            Stream = OptionalBool(body, "stream") ?? false,
            KvCache = kvCache,
            IncludeUsage = streamOptions.ValueKind == JsonValueKind.Object && (OptionalBool(streamOptions, "include_usage", "stream_options.include_usage") ?? false),
        };
    }

    /// <summary>
    /// The generation options for a prompt of <paramref name="promptTokens"/> tokens, refusing a
    /// request whose prompt and completion do not fit in the context.
    /// </summary>
    public GenerationOptions Options(int promptTokens, ServerState server, string promptParam)
    {
        int context = server.Queue.Engine.ContextLength;
        int maxTokens;
        if (MaxTokens is int asked)
        {
            if (promptTokens + asked > context)
                throw ContextExceeded(context, promptTokens, asked, promptParam, MaxTokensParam);
            maxTokens = asked;
        }
        else
        {
            // Without max_tokens: the server's default, cut to the room the prompt leaves.
            if (promptTokens >= context)
                throw ContextExceeded(context, promptTokens, 1, promptParam, promptParam);
            maxTokens = Math.Min(server.Options.DefaultMaxTokens ?? int.MaxValue, context - promptTokens);
        }
        return new GenerationOptions
        {
            MaxTokens = maxTokens,
            Sampling = Sampling,
            StopStrings = Stop,
            IgnoreEndOfGeneration = IgnoreEos,
        };
    }

    /// <summary>
    /// kv_cache (our extension): a policy in <see cref="PolicySpec"/> syntax, e.g. "specache:bits=1,k=32".
    /// Where the host tier lives and how its link is modelled stay the server's: a request picks how
    /// its cache is kept, not where on the server's disks.
    /// </summary>
    static KvCacheOptions? ReadKvCache(JsonElement body, ServerState server)
    {
        if (OptionalString(body, "kv_cache") is not { } text) return null;
        KvCacheOptions asked;
        try
        {
            asked = PolicySpec.Parse(text);
        }
        catch (ArgumentException e)
        {
            throw RequestException.BadValue("kv_cache", e.Message);
        }
        var own = server.Queue.Engine.Options.KvCache;
        var options = asked with
        {
            SpeCache = asked.SpeCache with { HostTier = own.SpeCache.HostTier, Interconnect = own.SpeCache.Interconnect },
            FullElement = asked.Policy == own.Policy ? own.FullElement : asked.FullElement,
        };
        try
        {
            return KvCacheFactory.CheckSupports(options, server.Queue.Engine.Config);
        }
        catch (ArgumentException e)
        {
            throw RequestException.BadValue("kv_cache", e.Message);
        }
    }

    static RequestException ContextExceeded(int context, int promptTokens, int completionTokens, string promptParam, string param) =>
        new(400,
            $"This model's maximum context length is {context} tokens. However, you requested {promptTokens + completionTokens} tokens " +
            $"({promptTokens} in the {promptParam}, {completionTokens} in the completion). Please reduce the length of the {promptParam} or completion.",
            param, "context_length_exceeded");

    static IReadOnlyList<string> ReadStop(JsonElement body)
    {
        if (!body.TryGetProperty("stop", out var stop)) return [];
        switch (stop.ValueKind)
        {
            case JsonValueKind.Null: return [];
            case JsonValueKind.String: return stop.GetString() is { Length: > 0 } one ? [one] : [];
            case JsonValueKind.Array:
                var list = new List<string>();
                foreach (var item in stop.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String) throw RequestException.WrongType("stop", "a string or an array of strings");
                    if (item.GetString() is { Length: > 0 } s) list.Add(s);
                }
                return list;
            default:
                throw RequestException.WrongType("stop", "a string or an array of strings");
        }
    }

    // Readers for optional fields: absent or null gives null, a value of the wrong type is a 400 naming the field.

    public static string? OptionalString(JsonElement body, string name)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw RequestException.WrongType(name, "a string");
    }

    static bool? OptionalBool(JsonElement body, string name, string? param = null)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw RequestException.WrongType(param ?? name, "a boolean"),
        };
    }

    static float? OptionalFloat(JsonElement body, string name)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) ? (float)d : throw RequestException.WrongType(name, "a number");
    }

    static int? OptionalInt(JsonElement body, string name)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw RequestException.WrongType(name, "an integer");
    }

    static long? OptionalLong(JsonElement body, string name)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long l) ? l : throw RequestException.WrongType(name, "an integer");
    }
}
