using System.Globalization;
using System.Text;

namespace SpeCache.Tokenizers.ChatTemplates;

// Runtime values are plain .NET objects with Python's meaning, since Jinja is Python underneath:
//   null = none, bool, long = int, double = float, string, List<object?> = list (and tuple),
//   Dictionary<string, object?> = dict (insertion-ordered, like Python's),
//   Undefined, Namespace, Callable (macros, globals, bound methods).

/// <summary>
/// A name or attribute that does not exist. Like Jinja's default Undefined it is falsy, renders as
/// empty text and iterates as empty. One deliberate leniency: reading an attribute or item of an
/// undefined value gives another undefined instead of an error (templates such as Mistral's test
/// <c>message.content.content is defined</c>); calling one, or using it in arithmetic, is an error.
/// </summary>
sealed class Undefined(string name)
{
    public string Name { get; } = name;
    public override string ToString() => "";
}

/// <summary>The mutable object from <c>namespace()</c>; the only way a loop body can change outer state.</summary>
sealed class Namespace
{
    public Dictionary<string, object?> Attributes { get; } = [];
}

/// <summary>A function value: a global (range, namespace, ...), a macro, or a bound method like <c>'x'.strip</c>.</summary>
sealed class Callable(string name, Func<List<object?>, Dictionary<string, object?>, object?> invoke)
{
    public string Name { get; } = name;
    public object? Invoke(List<object?> args, Dictionary<string, object?> kwargs) => invoke(args, kwargs);
}

/// <summary>Python semantics for truthiness, str(), repr(), ==, ordering and json.dumps.</summary>
static class Py
{
    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static bool IsNumber(object? v) => v is long or double;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new InvalidCastException(),
    };

    /// <summary>Python's str(): what {{ value }} prints.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's repr(), used for values inside lists and dicts.</summary>
    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        AppendRepr(sb, v);
        return sb.ToString();
    }

    static void AppendRepr(StringBuilder sb, object? v)
    {
        switch (v)
        {
            case null: sb.Append("None"); break;
            case Undefined: break;
            case bool b: sb.Append(b ? "True" : "False"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FloatRepr(d)); break;
            case string s:
                // Python picks single quotes unless the text has one and no double quote.
                char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
                sb.Append(q);
                foreach (char c in s)
                {
                    switch (c)
                    {
                        case '\\': sb.Append("\\\\"); break;
                        case '\n': sb.Append("\\n"); break;
                        case '\r': sb.Append("\\r"); break;
                        case '\t': sb.Append("\\t"); break;
                        default:
                            if (c == q)
                                sb.Append('\\');
                            sb.Append(c);
                            break;
                    }
                }
                sb.Append(q);
                break;
            case List<object?> list:
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                        sb.Append(", ");
                    AppendRepr(sb, list[i]);
                }
                sb.Append(']');
                break;
            case Dictionary<string, object?> dict:
                sb.Append('{');
                bool first = true;
                foreach (var (k, val) in dict)
                {
                    if (!first)
                        sb.Append(", ");
                    first = false;
                    AppendRepr(sb, k);
                    sb.Append(": ");
                    AppendRepr(sb, val);
                }
                sb.Append('}');
                break;
            case Namespace: sb.Append("<Namespace>"); break;
            case Callable c: sb.Append("<function ").Append(c.Name).Append('>'); break;
            default: sb.Append(v); break;
        }
    }

    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d))
            return "nan";
        if (double.IsInfinity(d))
            return d > 0 ? "inf" : "-inf";
        string s = d.ToString("R", CultureInfo.InvariantCulture);
        if (s.Contains('E'))
        {
            // Python writes 1e+20 / 1e-05 where .NET writes 1E+20 / 1E-05.
            s = s.Replace("E", "e");
            int e = s.IndexOf('e');
            if (s[e + 1] != '-' && s[e + 1] != '+')
                s = s.Insert(e + 1, "+");
            return s;
        }
        return s.Contains('.') ? s : s + ".0";
    }

    public static bool Eq(object? a, object? b)
    {
        if (a is Undefined || b is Undefined)
            return a is Undefined && b is Undefined;
        if (IsNumeric(a) && IsNumeric(b))
            return ToDouble(a) == ToDouble(b);
        switch (a)
        {
            case null: return b == null;
            case string s: return b is string t && s == t;
            case List<object?> x:
                if (b is not List<object?> y || x.Count != y.Count)
                    return false;
                for (int i = 0; i < x.Count; i++)
                    if (!Eq(x[i], y[i]))
                        return false;
                return true;
            case Dictionary<string, object?> dx:
                if (b is not Dictionary<string, object?> dy || dx.Count != dy.Count)
                    return false;
                foreach (var (k, v) in dx)
                    if (!dy.TryGetValue(k, out var w) || !Eq(v, w))
                        return false;
                return true;
            default: return ReferenceEquals(a, b);
        }
    }

    // In Python True == 1 and False == 0.
    static bool IsNumeric(object? v) => v is long or double or bool;

    /// <summary>Ordering for &lt; &gt; and sort: numbers with numbers, strings with strings, lists element-wise.</summary>
    public static int Compare(object? a, object? b)
    {
        if (IsNumeric(a) && IsNumeric(b))
            return ToDouble(a).CompareTo(ToDouble(b));
        if (a is string s && b is string t)
            return string.CompareOrdinal(s, t);
        if (a is List<object?> x && b is List<object?> y)
        {
            for (int i = 0; i < Math.Min(x.Count, y.Count); i++)
            {
                int c = Compare(x[i], y[i]);
                if (c != 0)
                    return c;
            }
            return x.Count.CompareTo(y.Count);
        }
        throw new InvalidOperationException($"cannot order {TypeName(a)} and {TypeName(b)}");
    }

    public static string TypeName(object? v) => v switch
    {
        null => "none",
        Undefined u => $"undefined '{u.Name}'",
        bool => "bool",
        long => "int",
        double => "float",
        string => "string",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        Namespace => "namespace",
        Callable => "function",
        _ => v.GetType().Name,
    };

    /// <summary>
    /// json.dumps the way Hugging Face's tojson filter calls it: ensure_ascii=False (non-ASCII text as is),
    /// separators ", " and ": " without indent, "," and ": " with indent, keys in insertion order.
    /// </summary>
    public static string Json(object? v, int? indent)
    {
        var sb = new StringBuilder();
        AppendJson(sb, v, indent, 0);
        return sb.ToString();
    }

    static void AppendJson(StringBuilder sb, object? v, int? indent, int depth)
    {
        switch (v)
        {
            case null or Undefined: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d));
                break;
            case string s: AppendJsonString(sb, s); break;
            case List<object?> list:
                AppendJsonContainer(sb, '[', ']', list.Count, indent, depth, i => AppendJson(sb, list[i], indent, depth + 1));
                break;
            case Dictionary<string, object?> dict:
                var entries = dict.ToList();
                AppendJsonContainer(sb, '{', '}', entries.Count, indent, depth, i =>
                {
                    AppendJsonString(sb, entries[i].Key);
                    sb.Append(": ");
                    AppendJson(sb, entries[i].Value, indent, depth + 1);
                });
                break;
            case Namespace ns: AppendJson(sb, ns.Attributes, indent, depth); break;
            default: throw new InvalidOperationException($"{TypeName(v)} is not JSON serializable");
        }
    }

    static void AppendJsonContainer(StringBuilder sb, char open, char close, int count, int? indent, int depth, Action<int> item)
    {
        sb.Append(open);
        if (count == 0)
        {
            sb.Append(close);
            return;
        }
        for (int i = 0; i < count; i++)
        {
            if (i > 0)
                sb.Append(indent == null ? ", " : ",");
            if (indent != null)
                sb.Append('\n').Append(' ', indent.Value * (depth + 1));
            item(i);
        }
        if (indent != null)
            sb.Append('\n').Append(' ', indent.Value * depth);
        sb.Append(close);
    }

    static void AppendJsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20)
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>Converts caller-supplied .NET values (extra template variables) to template values.</summary>
    public static object? FromDotNet(object? v) => v switch
    {
        null or string or bool or long or double => v,
        int i => (long)i,
        short s => (long)s,
        uint u => (long)u,
        float f => (double)f,
        decimal m => (double)m,
        ChatMessage m => new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content },
        System.Collections.IDictionary d => d.Keys.Cast<object>().ToDictionary(k => k.ToString()!, k => FromDotNet(d[k])),
        System.Collections.IEnumerable e => e.Cast<object?>().Select(FromDotNet).ToList(),
        _ => throw new ArgumentException($"chat template: a value of type {v.GetType().Name} cannot be passed to a template"),
    };
}
