using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Tests.Tokenizers.ChatTemplates;

/// <summary>
/// Real chat templates rendered for llama.cpp's fixed conversation (system, user, assistant, user,
/// assistant, user; add_generation_prompt true) and compared with expectations from outside this
/// project: llama.cpp's test-chat-template.cpp, and, for template files it has no expectation for,
/// strings stated here with the reasoning, cross-checked with Python's jinja2 3.1.6 using Hugging
/// Face's settings (trim_blocks, lstrip_blocks, tojson with ensure_ascii=False).
/// </summary>
public class ChatTemplateConformanceTests
{
    static readonly List<ChatMessage> Conversation =
        LlamaCppTemplateCases.Conversation.Select(m => new ChatMessage(m.Role, m.Content)).ToList();

    static string TemplateFile(string name) =>
        File.ReadAllText(Path.Combine(TestPaths.LlamaCppSource, "models", "templates", name));

    [Theory]
    [InlineData("teknium/OpenHermes-2.5-Mistral-7B")] // ChatML, as Qwen2.5 uses
    [InlineData("Llama-3")] // meta-llama/Meta-Llama-3-8B-Instruct
    [InlineData("mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1' template with a system prompt)")]
    [InlineData("Mistral-Large-Instruct-2407 (mistralai 'v3' template; modified to have system prompt at start)")]
    [InlineData("Mistral-Nemo-Instruct-2407 (mistralai 'v3-tekken' template; modified to have system prompt at start)")]
    [InlineData("mlabonne/AlphaMonarch-7B")]
    [InlineData("TheBloke/FusionNet_34Bx2_MoE-AWQ")]
    [InlineData("bofenghuang/vigogne-2-70b-chat")]
    [InlineData("deepseek-ai/deepseek-coder-33b-instruct")]
    [InlineData("CohereForAI/c4ai-command-r-plus")]
    [InlineData("Orca-Vicuna")]
    [InlineData("ibm-granite/granite-3.0-8b-instruct")]
    public void RendersLikeLlamaCpp(string name)
    {
        var c = LlamaCppTemplateCases.Get(name);
        var rendered = ChatTemplate.Parse(c.Template).Render(Conversation, addGenerationPrompt: true, c.Bos, c.Eos);
        Assert.Equal(c.ExpectedJinja, rendered);
    }

    [Fact]
    public void MistralV02WithoutSystemRoleRaisesTheTemplatesOwnError()
    {
        // llama.cpp merges the system message into the first user turn before rendering this template
        // (its expected output relies on that polyfill); we render as the template is written, and
        // the template itself rejects a system message.
        var c = LlamaCppTemplateCases.Get("mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)");
        var template = ChatTemplate.Parse(c.Template);
        var error = Assert.Throws<ChatTemplateException>(() => template.Render(Conversation, true, c.Bos, c.Eos));
        Assert.True(error.RaisedByTemplate);
        Assert.Contains("Conversation roles must alternate user/assistant/user/assistant/...", error.Message);

        var withoutSystem = Conversation.Skip(1).ToList();
        Assert.Equal("[INST] Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]",
            template.Render(withoutSystem, true, c.Bos, c.Eos));
    }

    [Fact]
    public void Llama31File()
    {
        // The Llama-3 case above without tools, plus what 3.1 adds: BOS, and a system header with the
        // knowledge cutoff and date_string's default "26 Jul 2024" before the (trimmed) system message.
        // Message contents are trimmed, so "   I am an assistant   " loses its spaces.
        const string expected =
            "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
            "You are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n";
        var template = ChatTemplate.Parse(TemplateFile("meta-llama-Llama-3.1-8B-Instruct.jinja"));
        Assert.Equal(expected, template.Render(Conversation, true, "<s>", "</s>"));

        // With date_string given (llama.cpp passes one), it replaces the default.
        var dated = template.Render(Conversation, true, "<s>", "</s>", new Dictionary<string, object?> { ["date_string"] = "01 Jan 2026" });
        Assert.Contains("Today Date: 01 Jan 2026\n", dated);
    }

    [Fact]
    public void Llama32FileCallsStrftimeNow()
    {
        // Llama 3.2 asks strftime_now("%d %b %Y") for today's date when date_string is not given.
        var template = ChatTemplate.Parse(TemplateFile("meta-llama-Llama-3.2-3B-Instruct.jinja"));
        template.Clock = () => new DateTime(2026, 3, 5);
        var rendered = template.Render(Conversation, true, "<|begin_of_text|>", "<|eot_id|>");
        Assert.StartsWith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 05 Mar 2026\n\n", rendered);
    }

    [Fact]
    public void Qwen25FileIsChatMl()
    {
        // With a system message and no tools, Qwen2.5's template is plain ChatML: the same text as
        // llama.cpp's ChatML (OpenHermes) expectation.
        var expected = LlamaCppTemplateCases.Get("teknium/OpenHermes-2.5-Mistral-7B").ExpectedJinja;
        var template = ChatTemplate.Parse(TemplateFile("Qwen-Qwen2.5-7B-Instruct.jinja"));
        Assert.Equal(expected, template.Render(Conversation, true, "", "<|im_end|>"));

        // Without a system message it supplies its own.
        var noSystem = template.Render([new ChatMessage("user", "Hi")], true, "", "");
        Assert.Equal("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
                     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", noSystem);
    }

    [Fact]
    public void Qwen3File()
    {
        // Qwen3 walks messages[::-1] to find the last user query; assistant turns before it keep their
        // text as is (no <think> block), so for this conversation it renders as plain ChatML too.
        var expected = LlamaCppTemplateCases.Get("teknium/OpenHermes-2.5-Mistral-7B").ExpectedJinja;
        var template = ChatTemplate.Parse(TemplateFile("Qwen-Qwen3-0.6B.jinja"));
        Assert.Equal(expected, template.Render(Conversation, true, "", "<|im_end|>"));

        // enable_thinking=false appends an empty think block to the generation prompt.
        var noThinking = template.Render([new ChatMessage("user", "Hi")], true, "", "", new Dictionary<string, object?> { ["enable_thinking"] = false });
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", noThinking);

        // A final assistant turn after the last query gets its reasoning split out of <think>...</think>.
        var withReasoning = template.Render(
            [new ChatMessage("user", "Hi"), new ChatMessage("assistant", "<think>\nhmm\n</think>\n\nHello!")], false, "", "");
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\nHello!<|im_end|>\n", withReasoning);
    }

    [Fact]
    public void MistralNemoFileEqualsLlamaCppTekkenCase()
    {
        // models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja is the 'v3-tekken' template of
        // test-chat-template.cpp, so its expectation applies to the file as well.
        var c = LlamaCppTemplateCases.Get("Mistral-Nemo-Instruct-2407 (mistralai 'v3-tekken' template; modified to have system prompt at start)");
        var template = ChatTemplate.Parse(TemplateFile("mistralai-Mistral-Nemo-Instruct-2407.jinja"));
        Assert.Equal(c.ExpectedJinja, template.Render(Conversation, true, c.Bos, c.Eos));
    }

    [Fact]
    public void DefaultIsChatMl()
    {
        var expected = LlamaCppTemplateCases.Get("teknium/OpenHermes-2.5-Mistral-7B").ExpectedJinja;
        Assert.Equal(expected, ChatTemplate.Default.Render(Conversation, true, "<s>", "</s>"));
    }
}

/// <summary>Every template llama.cpp ships in models/templates either renders or says what it lacks.</summary>
public class PeerTemplateSweepTests
{
    // Each uses something outside our subset; the message must name it. (At the time of writing,
    // 61 of the 70 templates render the same text as Python's jinja2 for the sweep's conversation.)
    static readonly Dictionary<string, string> Unsupported = new()
    {
        ["ByteDance-Seed-OSS.jinja"] = "dict keys other than strings",
        ["deepseek-ai-DeepSeek-V3.2.jinja"] = "filter 'from_json'",
        ["deepseek-ai-DeepSeek-V4.jinja"] = "filter 'from_json'",
        ["deepseek-ai-DeepSeek-V4-Flash-0731.jinja"] = "filter 'from_json'",
        ["fireworks-ai-llama-3-firefunction-v2.jinja"] = "statement 'filter'",
    };

    // These reject this conversation themselves (raise_exception), as they do under jinja2.
    static readonly HashSet<string> RejectSystemRole = ["google-gemma-2-2b-it.jinja"];

    public static TheoryData<string> TemplateFiles()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Path.Combine(TestPaths.LlamaCppSource, "models", "templates"), "*.jinja").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileName(f));
        return data;
    }

    [Theory]
    [MemberData(nameof(TemplateFiles))]
    public void RendersOrNamesTheMissingConstruct(string file)
    {
        var conversation = new List<ChatMessage>
        {
            new("system", "You are a helpful assistant"),
            new("user", "Héllo \"wörld\" 🎉\n  tabs\there  "),
            new("assistant", "<think>\nplan\n</think>\n\nAnswer {x}"),
            new("user", "Another question"),
        };
        string source = File.ReadAllText(Path.Combine(TestPaths.LlamaCppSource, "models", "templates", file));
        void Run()
        {
            var template = ChatTemplate.Parse(source);
            template.Clock = () => new DateTime(2026, 3, 5);
            Assert.NotEmpty(template.Render(conversation, true, "<s>", "</s>"));
        }

        if (Unsupported.TryGetValue(file, out var what))
        {
            var e = Assert.Throws<NotSupportedException>(Run);
            Assert.Contains(what, e.Message);
            Assert.Matches(@"\(line \d+, column \d+\)$", e.Message);
        }
        else if (RejectSystemRole.Contains(file))
            Assert.True(Assert.Throws<ChatTemplateException>(Run).RaisedByTemplate);
        else
            Run();
    }
}
