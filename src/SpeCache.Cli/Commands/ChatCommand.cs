using System.CommandLine;
using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Cli.Commands;

/// <summary>
/// <c>specache chat</c>: an interactive conversation (one user turn per line of stdin) rendered with
/// the model's own chat template. The KV cache carries over between turns: only the new part of the
/// conversation is prefilled when the rendered text extends what the cache already holds.
/// </summary>
static class ChatCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var system = new Option<string?>("--system") { Description = "A system message to start the conversation with." };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Most tokens per reply.", DefaultValueFactory = _ => 512 };
        var template = new Option<string?>("--chat-template") { Description = "A Jinja chat template file to use instead of the model's." };
        var sampling = new SamplingCliOptions();
        var command = new Command("chat", "Chat with a model using its chat template (one message per line; an empty line or EOF ends).");
        common.AddTo(command);
        command.Options.Add(system);
        command.Options.Add(maxTokens);
        command.Options.Add(template);
        sampling.AddTo(command);

        command.SetAction(result => CliErrors.Run(() =>
        {
            using var engine = common.LoadEngine(result);
            var chatTemplate = LoadTemplate(result.GetValue(template), engine);
            var options = new GenerationOptions
            {
                MaxTokens = result.GetValue(maxTokens),
                Sampling = sampling.Read(result),
                StopStrings = sampling.StopStrings(result),
            };
            var messages = new List<ChatMessage>();
            if (result.GetValue(system) is { Length: > 0 } systemText) messages.Add(new ChatMessage("system", systemText));
            using var cache = engine.CreateCache();
            var cached = new List<int>(); // the tokens whose K/V the cache holds, in order
            string bos = engine.Tokenizer.BosToken >= 0 ? engine.Tokenizer.TokenText(engine.Tokenizer.BosToken) : "";
            string eos = engine.Tokenizer.EosToken >= 0 ? engine.Tokenizer.TokenText(engine.Tokenizer.EosToken) : "";
            bool interactive = !Console.IsInputRedirected;

            while (true)
            {
                if (interactive) Console.Error.Write("> ");
                string? line = Console.In.ReadLine();
                if (string.IsNullOrWhiteSpace(line)) break;
                messages.Add(new ChatMessage("user", line));

                string rendered = chatTemplate.Render(messages, addGenerationPrompt: true, bos, eos);
                int[] conversation = engine.Tokenizer.Encode(rendered, addBos: engine.Tokenizer.AddBos && !rendered.StartsWith(bos, StringComparison.Ordinal), parseSpecial: true);
                int[] fresh = NewTokens(conversation, cached, cache);

                var stats = new GenerationStats();
                var reply = new System.Text.StringBuilder();
                foreach (string piece in engine.Generator.Generate(fresh, options, cache, stats))
                {
                    reply.Append(piece);
                    Console.Out.Write(piece);
                }
                Console.Out.WriteLine();
                // The cache now holds the prompt and every reply token but the last, which was sampled, not fed.
                cached.AddRange(fresh);
                if (stats.Tokens.Count > 0) cached.AddRange(stats.Tokens.Take(stats.Tokens.Count - 1));
                messages.Add(new ChatMessage("assistant", reply.ToString()));
                if (interactive)
                    Console.Error.WriteLine($"[{stats.GeneratedTokens} tokens, {stats.DecodeTokensPerSecond:F1} tokens/s, context {cache.Length}/{cache.Capacity}]");
            }
            return 0;
        }));
        return command;
    }

    static ChatTemplate LoadTemplate(string? path, Engine engine)
    {
        if (path != null) return ChatTemplate.Parse(File.ReadAllText(path));
        return engine.File.Metadata.TryGetValue("tokenizer.chat_template", out var t) && t is string source
            ? ChatTemplate.Parse(source)
            : ChatTemplate.Default;
    }

    /// <summary>
    /// The part of <paramref name="conversation"/> the cache does not hold yet. When the cache holds
    /// something else (the reply re-tokenized differently), it starts over.
    /// </summary>
    static int[] NewTokens(int[] conversation, List<int> cached, IKvCache cache)
    {
        bool extends = cached.Count < conversation.Length;
        for (int i = 0; extends && i < cached.Count; i++) extends = cached[i] == conversation[i];
        if (extends) return conversation[cached.Count..];
        cache.Clear();
        cached.Clear();
        return conversation;
    }
}
