namespace SpeCache.Server;

/// <summary>GET /v1/models and /v1/models/{id}: the one model this server serves.</summary>
static class ModelsEndpoint
{
    public static IResult List(ServerState server) =>
        Results.Json(new { Object = "list", Data = new[] { Model(server) } }, Json.Options);

    public static IResult Get(string id, ServerState server) => id == server.ModelId
        ? Results.Json(Model(server), Json.Options)
        : OpenAiError.Result(404, $"The model '{id}' does not exist. This server serves '{server.ModelId}'.", "model", "model_not_found");

    static object Model(ServerState server) => new { Id = server.ModelId, Object = "model", Created = server.Started, OwnedBy = "specache" };
}
