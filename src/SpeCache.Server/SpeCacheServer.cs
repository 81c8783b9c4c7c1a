using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SpeCache.Generation;

namespace SpeCache.Server;

/// <summary>
/// The OpenAI-compatible HTTP server: <c>/v1/chat/completions</c>, <c>/v1/completions</c>,
/// <c>/v1/models</c>, <c>/health</c>, <c>/metrics</c> and <c>/v1/stats</c> over one engine, and a web
/// chat page at <c>/</c>. Every failure a client can see is a JSON error in OpenAI's shape, never a
/// stack trace or an HTML page.
/// </summary>
public static class SpeCacheServer
{
    /// <summary>Builds the server (not started). The caller owns <paramref name="queue"/> and its engine.</summary>
    public static WebApplication Create(GenerationQueue queue, ServerOptions options)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            // Production whatever the environment says: no developer exception page with stack traces.
            EnvironmentName = Environments.Production,
            ApplicationName = typeof(SpeCacheServer).Assembly.GetName().Name,
        });
        builder.Logging.ClearProviders();
        string host = options.Host.Contains(':') && !options.Host.StartsWith('[') ? $"[{options.Host}]" : options.Host;
        builder.WebHost.UseUrls($"http://{host}:{options.Port}");
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.AddServerHeader = false);
        builder.Services.AddSingleton(new ServerState(queue, options));

        var app = builder.Build();
        app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = WriteUnhandledAsync });
        // Unknown paths (404) and wrong methods (405) get the same JSON error shape as everything else.
        app.UseStatusCodePages(async context =>
        {
            var http = context.HttpContext;
            int status = http.Response.StatusCode;
            string message = status switch
            {
                404 => $"Unknown endpoint: {http.Request.Method} {http.Request.Path}.",
                405 => $"Method {http.Request.Method} is not allowed on {http.Request.Path}.",
                _ => $"The request failed with HTTP status {status}.",
            };
            await OpenAiError.WriteAsync(http, status, message);
        });
        if (options.ApiKey != null) app.Use(RequireApiKey(options.ApiKey));

        app.MapPost("/v1/chat/completions", ChatCompletionsEndpoint.HandleAsync);
        app.MapPost("/v1/completions", CompletionsEndpoint.HandleAsync);
        app.MapGet("/v1/models", ModelsEndpoint.List);
        app.MapGet("/v1/models/{id}", ModelsEndpoint.Get);
        app.MapGet("/health", () => Results.Json(new { Status = "ok" }, Json.Options));
        app.MapGet("/metrics", MetricsEndpoint.Handle);
        app.MapGet("/v1/stats", StatsEndpoint.Handle);
        app.MapGet("/", WebChatPage.Handle);
        return app;
    }

    /// <summary>Starts the server and returns the address it listens on (with the real port when 0 was asked for).</summary>
    public static async Task<Uri> Start(WebApplication app, CancellationToken cancellation = default)
    {
        await app.StartAsync(cancellation);
        var addresses = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        return new Uri(addresses.First());
    }

    static Func<HttpContext, RequestDelegate, Task> RequireApiKey(string apiKey)
    {
        byte[] expected = Encoding.UTF8.GetBytes($"Bearer {apiKey}");
        return async (http, next) =>
        {
            // /health stays open so that a load balancer or a start-up script can probe without the key,
            // and so does the web chat page, which holds no data: its requests carry the key the user types.
            if (http.Request.Path.Equals("/health", StringComparison.OrdinalIgnoreCase) || IsWebChatPage(http.Request))
            {
                await next(http);
                return;
            }
            byte[] given = Encoding.UTF8.GetBytes(http.Request.Headers.Authorization.ToString());
            if (!CryptographicOperations.FixedTimeEquals(given, expected))
            {
                string message = given.Length == 0
                    ? "You didn't provide an API key. Send it in the Authorization header as 'Bearer KEY'."
                    : "Incorrect API key provided.";
                await OpenAiError.WriteAsync(http, 401, message, null, "invalid_api_key");
                return;
            }
            await next(http);
        };
    }

    static bool IsWebChatPage(HttpRequest request) =>
        request.Path == "/" && HttpMethods.IsGet(request.Method);

    static async Task WriteUnhandledAsync(HttpContext http)
    {
        var error = http.Features.Get<IExceptionHandlerFeature>()?.Error;
        if (error is BadHttpRequestException bad)
        {
            // Kestrel's own refusals (body too large, broken framing) keep their status.
            await OpenAiError.WriteAsync(http, bad.StatusCode, bad.Message);
            return;
        }
        await OpenAiError.WriteAsync(http, 500, $"The server had an error while processing your request: {error?.Message}", null, null, "server_error");
    }
}
