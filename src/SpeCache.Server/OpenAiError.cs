using System.Text.Json;

namespace SpeCache.Server;

/// <summary>
/// A request the server refuses, with OpenAI's error shape:
/// <c>{"error":{"message":...,"type":"invalid_request_error","param":...,"code":...}}</c>.
/// Thrown while reading a request and turned into the response by the endpoint.
/// </summary>
sealed class RequestException(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error")
    : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type;

    public IResult ToResult() => OpenAiError.Result(Status, Message, Param, Code, Type);

    public static RequestException Missing(string param) =>
        new(400, $"Missing required parameter: '{param}'.", param, "missing_required_parameter");

    public static RequestException WrongType(string param, string expected) =>
        new(400, $"Invalid type for '{param}': expected {expected}.", param, "invalid_type");

    public static RequestException BadValue(string param, string message) =>
        new(400, $"Invalid value for '{param}': {message}", param, "invalid_value");
}

static class OpenAiError
{
    public static object Body(string message, string? param, string? code, string type = "invalid_request_error") =>
        new { Error = new { Message = message, Type = type, Param = param, Code = code } };

    public static IResult Result(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error") =>
        Results.Json(Body(message, param, code, type), Json.Options, statusCode: status);

    public static Task WriteAsync(HttpContext http, int status, string message, string? param = null, string? code = null, string type = "invalid_request_error")
    {
        http.Response.StatusCode = status;
        return http.Response.WriteAsJsonAsync(Body(message, param, code, type), Json.Options);
    }
}

/// <summary>The JSON settings of every response: OpenAI's snake_case names, nulls written out.</summary>
static class Json
{
    public static JsonSerializerOptions Options { get; } = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };
}
