namespace SpeCache.Server;

/// <summary>
/// GET /: the built-in web chat page (WebChat.html, embedded in this assembly). One self-contained
/// file, inline CSS and plain JavaScript, so the server ships no build step and loads nothing from
/// elsewhere. The page streams its answers from /v1/chat/completions and polls /v1/stats for the
/// memory per tier; it holds no data itself, so it is served without the API key (the page sends
/// the key the user types with each of its requests).
/// </summary>
static class WebChatPage
{
    public const string ResourceName = "SpeCache.Server.WebChat.html";

    static readonly byte[] Html = Load();

    public static IResult Handle(HttpContext http)
    {
        var headers = http.Response.Headers;
        // The page may talk to this server only, and run only its own inline script and style.
        headers.ContentSecurityPolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
        headers.XContentTypeOptions = "nosniff";
        headers.CacheControl = "no-cache";
        return Results.Bytes(Html, "text/html; charset=utf-8");
    }

    static byte[] Load()
    {
        using var stream = typeof(WebChatPage).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"The web chat page ({ResourceName}) is missing from {typeof(WebChatPage).Assembly.GetName().Name}.");
        using var bytes = new MemoryStream();
        stream.CopyTo(bytes);
        return bytes.ToArray();
    }
}
