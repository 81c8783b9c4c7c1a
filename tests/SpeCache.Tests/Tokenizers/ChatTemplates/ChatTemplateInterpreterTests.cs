using SpeCache.Tokenizers.ChatTemplates;

namespace SpeCache.Tests.Tokenizers.ChatTemplates;

/// <summary>
/// The interpreter piece by piece. Expected outputs in <see cref="JinjaCases"/> were produced by
/// Python's jinja2 3.1.6 with Hugging Face's settings (trim_blocks, lstrip_blocks, loopcontrols,
/// tojson = json.dumps with ensure_ascii=False), not written by hand.
/// </summary>
public class ChatTemplateInterpreterTests
{
    static string Render(string template, IReadOnlyDictionary<string, object?>? extra = null) =>
        ChatTemplate.Parse(template).Render([], addGenerationPrompt: false, "<s>", "</s>", extra);

    public static TheoryData<string, string> JinjaCases => new()
    {
        { "a  {{- ' b ' -}}  c", "a b c" },
        { "{% if true %}\n  yes\n{% endif %}\nafter", "  yes\nafter" },
        { "  {% if true %}\nx\n  {% endif %}\ny", "x\ny" },
        { "a\n  {%- if true %} b {% endif -%}\n  c", "a b c" },
        { "{# comment #}\nx{#- trimmed -#}  y", "xy" },
        { "  {%+ if true %}k{% endif +%}\nz", "  k\nz" },
        { "{{ 'v' }}\n{{ 'w' }}", "v\nw" },
        { "{% for x in [1, 2, 3] %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %} {% endfor %}", "1/0/3F 2/1/3 3/2/3L " },
        { "{% for x in [1, 2, 3, 4, 5] if x is odd %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}", "1:1/3 3:2/3 5:3/3 " },
        { "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;" },
        { "{% for k, v in {'a': 1, 'b': [2, 'x']} | items %}{{ k }}={{ v }};{% endfor %}", "a=1;b=[2, 'x'];" },
        { "{% for x in [] %}x{% else %}empty{% endfor %}", "empty" },
        { "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", "0134" },
        { "{% for c in 'abc' %}{{ c }}-{% endfor %}", "a-b-c-" },
        { "{% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}|{{ x }}", "23|1" },
        { "{% set ns = namespace(n=0, found=false) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.n }} {{ ns.found }}", "6 True" },
        { "{{ [1,2,3,4,5][1:3] }} {{ [1,2,3,4,5][::-1] }} {{ 'hello'[::-1] }} {{ [1,2,3,4,5][-2:] }} {{ [1,2,3,4,5][::2] }} {{ 'hello'[1:-1] }} {{ [1,2,3][5:] }} {{ [1,2,3,4,5][3:0:-1] }}", "[2, 3] [5, 4, 3, 2, 1] olleh [4, 5] [1, 3, 5] ell [] [4, 3, 2]" },
        { "{{ [1,2,3][-1] }} {{ 'abc'[0] }} {{ {'a': {'b': 7}}['a']['b'] }} {{ {'a': {'b': 7}}.a.b }}", "3 a 7 7" },
        { "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 / 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 1.5 + 1 }} {{ 10 / 5 }}", "3 -4 3.5 1 2 1024 7 9 2.5 2.0" },
        { "{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 'x' in 'xyz' }} {{ 3 not in [1, 2] }} {{ 'k' in {'k': 1} }}", "a1NoneTrue ababab [1, 2] True True True" },
        { "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ [1, 'a'] == [1, 'a'] }} {{ none is none }} {{ 1 != 2 }}", "True False True True True True True" },
        { "{{ true and 'x' }} {{ false or 'y' }} {{ not 0 }} {{ '' or 'z' }} {{ 0 and 1 }}", "x y True z 0" },
        { "{{ 'yes' if 1 > 0 else 'no' }} {{ 'a' if false }}|", "yes |" },
        { "{{ \"q\\\"uote\\n\" | tojson }} {{ 'it\\'s' }} {{ 'tab\\there' }}", "\"q\\\"uote\\n\" it's tab\there" },
        { "{{ [1, 'two', none, true, 2.5] }} {{ {'a': 'b'} }} {{ none }} {{ 3.0 }} {{ 1e3 }}", "[1, 'two', None, True, 2.5] {'a': 'b'} None 3.0 1000.0" },
        { "{{ x is defined }} {{ x is undefined }} {{ 'a' is string }} {{ 1 is number }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is sequence }} {{ true is true }} {{ false is false }} {{ 1 is not none }} {{ none is none }}", "False True True True True True True True True True True" },
        { "{{ 4 is divisibleby 2 }} {{ 3 is even }} {{ 'ABC' is upper }} {{ 1 is integer }} {{ 1.0 is float }}", "True False True True True" },
        { "{{ '  hi  ' | trim }}|{{ [1,2,3] | length }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}", "hi|3|ABC|abc|Hello World|Hello" },
        { "{{ {'a': [1, 'x'], 'b': none, 'c': 'é\"'} | tojson }}", "{\"a\": [1, \"x\"], \"b\": null, \"c\": \"é\\\"\"}" },
        { "{{ {'a': [1, {'b': true}], 'e': {}} | tojson(indent=2) }}", "{\n  \"a\": [\n    1,\n    {\n      \"b\": true\n    }\n  ],\n  \"e\": {}\n}" },
        { "{{ missing | default('dflt') }} {{ '' | default('dflt') }} {{ '' | default('dflt', true) }} {{ none | d('x') }}", "dflt  dflt None" },
        { "{{ [3, 4, 5] | first }} {{ [3, 4, 5] | last }} {{ 'abc' | first }} {{ [1, 2, 3] | join(', ') }} {{ ['a','b'] | join }}", "3 5 a 1, 2, 3 ab" },
        { "{{ 'a-b-c' | replace('-', '+') }} {{ 12 | string + 'x' }} {{ '42' | int + 1 }} {{ 'x' | int }} {{ 3.9 | int }}", "a+b+c 12x 43 0 3" },
        { "{% set msgs = [{'role': 'user', 'c': 1}, {'role': 'system', 'c': 2}, {'role': 'user', 'c': 3}] %}{{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='c') | list }} {{ msgs | rejectattr('role', 'equalto', 'user') | list | length }} {{ msgs | map(attribute='role') | unique | list }}", "[1, 3] 1 ['user', 'system']" },
        { "{{ [0, 1, '', 'a', none] | select | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ ['a', 'b'] | map('upper') | join }}", "[1, 'a'] [2, 4] AB" },
        { "{{ 'abc' | list }} {{ {'x': 1, 'y': 2} | list }} {{ [1, 2, 3] | reverse | list }}", "['a', 'b', 'c'] ['x', 'y'] [3, 2, 1]" },
        { "[{{ '  x  '.strip() }}] [{{ 'xxhixx'.strip('x') }}] [{{ '\\n\\nhi\\n'.lstrip('\\n') }}] [{{ 'hi  '.rstrip() }}] {{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }}", "[x] [hi] [hi\n] [hi] True True" },
        { "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a</think>b</think>c'.split('</think>')[-1] }} {{ 'Ab'.upper() }}{{ 'Ab'.lower() }} {{ 'aaa'.replace('a', 'b', 2) }}", "['a', 'b', '', 'c'] ['a', 'b'] c ABab bba" },
        { "{% set d = {'a': 1} %}{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.keys() | list }} {{ d.values() | list }}", "1 None 5 ['a'] [1]" },
        { "{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]", "[in side]" },
        { "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet('Cy', '.') }}", "Hi Bob! Hi Al? Hi Cy." },
        { "{{ {'a': {'b': 1}} }}", "{'a': {'b': 1}}" },
        { "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }}", "[0, 1, 2] [1, 3, 5] [3, 2, 1]" },
    };

    [Theory]
    [MemberData(nameof(JinjaCases))]
    public void RendersLikeJinja2(string template, string expected) => Assert.Equal(expected, Render(template));

    [Fact]
    public void UndefinedIsFalsyEmptyAndIterableAsEmpty()
    {
        Assert.Equal("[] False falsy", Render("[{{ missing }}] {{ missing is defined }} {% if not missing %}falsy{% endif %}{% for x in missing %}never{% endfor %}"));
        // Deliberately more lenient than jinja2, which raises here: attributes and items of an
        // undefined value are undefined too.
        Assert.Equal("[] [] False", Render("[{{ missing.attr }}] [{{ missing['k'] }}] {{ missing.attr is defined }}"));
        // Attributes a dict lacks are undefined, as in Jinja.
        Assert.Equal("False", Render("{{ {'role': 'user'}.tool_calls is defined }}"));
    }

    [Fact]
    public void CallingUndefinedIsAnError()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render("ok\n  {{ nope(1) }}"));
        Assert.Equal("chat template: 'nope' is undefined and cannot be called (line 2, column 6)", e.Message);
    }

    [Fact]
    public void ArithmeticOnUndefinedIsAnError()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render("{{ 'a' + missing }}"));
        Assert.Contains("'missing' is undefined", e.Message);
    }

    [Fact]
    public void RaiseExceptionThrowsWithTheTemplatesMessage()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render("{% if true %}\n{{ raise_exception('roles must alternate') }}{% endif %}"));
        Assert.True(e.RaisedByTemplate);
        Assert.Equal("chat template raised an error: roles must alternate (line 2, column 4)", e.Message);
    }

    [Fact]
    public void UnsupportedFilterNamesItselfWithLineAndColumn()
    {
        var e = Assert.Throws<NotSupportedException>(() => ChatTemplate.Parse("line one\n{{ x }}\n  {{ attrs | xmlattr }}"));
        Assert.Equal("chat template: filter 'xmlattr' is not supported (line 3, column 14)", e.Message);
    }

    [Fact]
    public void UnsupportedTestStatementAndMethodAreNamed()
    {
        Assert.Equal("chat template: test 'escaped' is not supported (line 1, column 9)",
            Assert.Throws<NotSupportedException>(() => ChatTemplate.Parse("{{ x is escaped }}")).Message);
        Assert.Equal("chat template: statement 'include' is not supported (line 1, column 4)",
            Assert.Throws<NotSupportedException>(() => ChatTemplate.Parse("{% include 'x' %}")).Message);
        Assert.Equal("chat template: method 'zfill' of string is not supported (line 1, column 9)",
            Assert.Throws<NotSupportedException>(() => Render("{{ '{}'.zfill(1) }}")).Message);
    }

    [Theory]
    [InlineData("{% if x %}never closed", "chat template: 'if' opened here is never closed with 'endif' (line 1, column 4)")]
    [InlineData("{% endfor %}", "chat template: 'endfor' without a matching opening tag (line 1, column 4)")]
    [InlineData("{{ 'abc }}", "chat template: string is not closed (line 1, column 4)")]
    [InlineData("a\n{{ 1 + }}", "chat template: expected an expression, got '}}' (line 2, column 8)")]
    [InlineData("{{ x", "chat template: tag is not closed with '}}' (line 1, column 1)")]
    [InlineData("{# open", "chat template: comment is not closed with '#}' (line 1, column 1)")]
    public void SyntaxErrorsSayWhere(string template, string message)
    {
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void SettingAnAttributeOfANonNamespaceIsAnError()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render("{% set d = {} %}{% set d.x = 1 %}"));
        Assert.Contains("'d' is not a namespace()", e.Message);
    }

    [Fact]
    public void ExtraVariablesAreVisible()
    {
        var extra = new Dictionary<string, object?>
        {
            ["flag"] = false,
            ["n"] = 3,
            ["items"] = new[] { "a", "b" },
            ["cfg"] = new Dictionary<string, object?> { ["k"] = 1.5 },
        };
        Assert.Equal("False 4 a,b 1.5", Render("{{ flag }} {{ n + 1 }} {{ items | join(',') }} {{ cfg.k }}", extra));
    }

    [Fact]
    public void MessagesAndSpecialTokensAreVisible()
    {
        var t = ChatTemplate.Parse("{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m['content'] }};{% endfor %}{% if add_generation_prompt %}>{% endif %}{{ eos_token }}");
        Assert.Equal("<s>user:hi;assistant:yo;></s>", t.Render([new ChatMessage("user", "hi"), new ChatMessage("assistant", "yo")], true, "<s>", "</s>"));
    }

    [Fact]
    public void StrftimeNowUsesTheClock()
    {
        var t = ChatTemplate.Parse("{{ strftime_now('%d %b %Y|%-d %B %y|%H:%M:%S %A %j %%') }}");
        t.Clock = () => new DateTime(2024, 7, 6, 9, 5, 3);
        Assert.Equal("06 Jul 2024|6 July 24|09:05:03 Saturday 188 %", t.Render([], false, "", ""));
    }

    [Fact]
    public void CrLfTemplatesRenderWithLf()
    {
        Assert.Equal("a\nb", Render("{% if true %}\r\na\r\n{% endif %}\r\nb"));
    }

    [Fact]
    public void OneTrailingNewlineOfTheTemplateIsDropped()
    {
        Assert.Equal("x\n", Render("x\n\n"));
    }
}
