namespace SpeCache.Server;

/// <summary>
/// GET /v1/stats: the figures of /metrics as one JSON object, for the web chat page's memory panel
/// (a browser reads JSON more easily than Prometheus text). Not an OpenAI endpoint.
/// </summary>
static class StatsEndpoint
{
    public static IResult Handle(ServerState server) => Results.Json(ServerStats.Read(server), Json.Options);
}
