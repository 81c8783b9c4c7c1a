using System.Text;

namespace SpeCache.Tests.Tokenizers.ChatTemplates;

/// <summary>
/// Reads the table of templates and expected renders from llama.cpp's tests/test-chat-template.cpp
/// (peer/llama.cpp, the version we test against), so our expectations come from an independent
/// source and are not retyped by hand.
/// </summary>
public static class LlamaCppTemplateCases
{
    public sealed record Case(string Name, string Template, string ExpectedJinja, string Bos, string Eos);

    /// <summary>The conversation every case renders (test-chat-template.cpp's main_automated_tests).</summary>
    public static readonly (string Role, string Content)[] Conversation =
    [
        ("system", "You are a helpful assistant"),
        ("user", "Hello"),
        ("assistant", "Hi there"),
        ("user", "Who are you"),
        ("assistant", "   I am an assistant   "),
        ("user", "Another question"),
    ];

    static readonly Lazy<Dictionary<string, Case>> All = new(Load);

    public static Case Get(string name) => All.Value.TryGetValue(name, out var c)
        ? c : throw new KeyNotFoundException($"no case named '{name}' in test-chat-template.cpp");

    static Dictionary<string, Case> Load()
    {
        string src = File.ReadAllText(Path.Combine(TestPaths.LlamaCppSource, "tests", "test-chat-template.cpp"));
        var cases = new Dictionary<string, Case>();
        int pos = 0;
        while ((pos = src.IndexOf("/* .name= */", pos, StringComparison.Ordinal)) >= 0)
        {
            string name = ReadField(src, ref pos, "/* .name= */");
            string template = ReadField(src, ref pos, "/* .template_str= */");
            string expected = ReadField(src, ref pos, "/* .expected_output= */");
            string expectedJinja = ReadField(src, ref pos, "/* .expected_output_jinja= */");
            // bos/eos are optional in the C++ initialiser; they default to "".
            int next = src.IndexOf("/* .name= */", pos, StringComparison.Ordinal);
            int end = next < 0 ? src.Length : next;
            string bos = OptionalField(src, pos, end, "/* .bos_token= */");
            string eos = OptionalField(src, pos, end, "/* .eos_token= */");
            cases[name] = new Case(name, template, expectedJinja.Length > 0 ? expectedJinja : expected, bos, eos);
        }
        return cases;
    }

    static string OptionalField(string src, int pos, int end, string label)
    {
        int at = src.IndexOf(label, pos, StringComparison.Ordinal);
        return at >= 0 && at < end ? ReadField(src, ref at, label) : "";
    }

    static string ReadField(string src, ref int pos, string label)
    {
        pos = src.IndexOf(label, pos, StringComparison.Ordinal) + label.Length;
        pos = src.IndexOf('"', pos);
        return ReadLiteral(src, ref pos);
    }

    /// <summary>One C++ string literal starting at the opening quote.</summary>
    static string ReadLiteral(string src, ref int pos)
    {
        var sb = new StringBuilder();
        pos++;
        while (src[pos] != '"')
        {
            char c = src[pos++];
            if (c != '\\')
            {
                sb.Append(c);
                continue;
            }
            char e = src[pos++];
            sb.Append(e switch { 'n' => '\n', 't' => '\t', 'r' => '\r', _ => e });
        }
        pos++;
        return sb.ToString();
    }
}
