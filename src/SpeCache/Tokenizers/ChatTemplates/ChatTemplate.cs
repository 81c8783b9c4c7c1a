namespace SpeCache.Tokenizers.ChatTemplates;

/// <summary>
/// A chat template (GGUF <c>tokenizer.chat_template</c> or tokenizer_config.json <c>chat_template</c>)
/// parsed once and rendered per request.
/// <para>
/// Chat templates are Jinja, and no Jinja engine for .NET is one we trust, so this is our own
/// interpreter for the subset that chat templates use (Llama 3/3.1/3.2, Mistral [INST], Qwen2.5 and
/// Qwen3 ChatML, and similar): a lexer with Hugging Face's whitespace settings (trim_blocks and
/// lstrip_blocks on), a parser to a syntax tree, and an evaluator with Python's value semantics.
/// Anything outside the subset fails with <see cref="NotSupportedException"/> naming the construct
/// and its line and column, at parse time where possible.
/// </para>
/// </summary>
public sealed class ChatTemplate
{
    readonly List<Node> _program;

    ChatTemplate(string source, List<Node> program)
    {
        Source = source;
        _program = program;
    }

    /// <summary>The template text as given.</summary>
    public string Source { get; }

    /// <summary>What <c>strftime_now</c> reads; replaceable so tests can fix the date.</summary>
    internal Func<DateTime> Clock { get; set; } = () => DateTime.Now;

    /// <summary>Parses a template; throws <see cref="ChatTemplateException"/> or <see cref="NotSupportedException"/>.</summary>
    public static ChatTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ChatTemplate(source, TemplateParser.Parse(source));
    }

    /// <summary>
    /// The fallback for a model that ships no template: ChatML
    /// (<c>&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</c> per message, then
    /// <c>&lt;|im_start|&gt;assistant\n</c> when a reply is wanted), the same format llama.cpp falls back
    /// to. It adds no BOS. It only suits models that know ChatML's markers; for others, pass a template.
    /// </summary>
    public static ChatTemplate Default { get; } = Parse(
        "{%- for message in messages -%}\n" +
        "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n" +
        "{%- endfor -%}\n" +
        "{%- if add_generation_prompt -%}\n" +
        "  {{- '<|im_start|>assistant\\n' -}}\n" +
        "{%- endif -%}");

    /// <summary>
    /// Renders the prompt. The template sees <c>messages</c> (each with <c>role</c> and <c>content</c>),
    /// <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c>, the globals <c>range</c>,
    /// <c>namespace</c>, <c>dict</c>, <c>raise_exception</c> and <c>strftime_now</c>, and any
    /// <paramref name="extra"/> variables (e.g. <c>enable_thinking</c>, <c>date_string</c>), which
    /// may hold strings, numbers, bools, null, lists and string-keyed dictionaries.
    /// </summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string bosToken, string eosToken,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var evaluator = new TemplateEvaluator(Clock);
        var scope = new Scope(evaluator.GlobalScope());
        scope.Set("messages", messages.Select(m => Py.FromDotNet(m)).ToList());
        scope.Set("add_generation_prompt", addGenerationPrompt);
        scope.Set("bos_token", bosToken);
        scope.Set("eos_token", eosToken);
        if (extra != null)
            foreach (var (name, value) in extra)
                scope.Set(name, Py.FromDotNet(value));
        return evaluator.Render(_program, scope);
    }
}
