using System.Globalization;
using System.Text;

namespace SpeCache.Tokenizers.ChatTemplates;

/// <summary>
/// Operators, attribute and item access, filters, tests, methods and globals: the subset of Jinja and
/// Python that the chat templates of Llama 3.x, Mistral, Qwen2.5 and Qwen3 use, plus their near
/// neighbours. Anything else is reported as not supported, naming it.
/// </summary>
static class TemplateBuiltins
{
    public static readonly HashSet<string> Filters =
    [
        "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "indent", "int", "items", "join",
        "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "safe",
        "select", "selectattr", "sort", "string", "title", "tojson", "trim", "unique", "upper",
    ];

    public static readonly HashSet<string> Tests =
    [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge", "gt",
        "in", "integer", "iterable", "le", "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas",
        "sequence", "string", "true", "undefined", "upper", "==", "!=", "<", ">", "<=", ">=",
    ];

    // ---- globals ----

    public static IEnumerable<(string, Callable)> Globals(Func<DateTime> clock)
    {
        yield return ("range", new Callable("range", (args, _) => Range(args)));
        yield return ("namespace", new Callable("namespace", (args, kwargs) =>
        {
            var ns = new Namespace();
            if (args.Count > 0 && args[0] is Dictionary<string, object?> init)
                foreach (var (k, v) in init)
                    ns.Attributes[k] = v;
            foreach (var (k, v) in kwargs)
                ns.Attributes[k] = v;
            return ns;
        }));
        yield return ("dict", new Callable("dict", (_, kwargs) => new Dictionary<string, object?>(kwargs)));
        yield return ("raise_exception", new Callable("raise_exception", (args, _) =>
            throw new TemplateError(args.Count > 0 ? Py.Str(args[0]) : "raise_exception() called", raised: true)));
        yield return ("strftime_now", new Callable("strftime_now", (args, _) =>
            Strftime(clock(), args.Count > 0 && args[0] is string f ? f : throw new TemplateError("strftime_now(format) needs a format string"))));
    }

    static List<object?> Range(List<object?> args)
    {
        long start = 0, stop, step = 1;
        var n = args.Select(a => a is long l ? l : throw new TemplateError($"range() needs integers, got {Py.TypeName(a)}")).ToList();
        switch (n.Count)
        {
            case 1: stop = n[0]; break;
            case 2: (start, stop) = (n[0], n[1]); break;
            case 3: (start, stop, step) = (n[0], n[1], n[2]); break;
            default: throw new TemplateError("range() takes 1 to 3 arguments");
        }
        if (step == 0)
            throw new TemplateError("range() step must not be zero");
        var result = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
            result.Add(i);
        return result;
    }

    /// <summary>Python's strftime for the directives chat templates use (Llama 3.x: "%d %b %Y").</summary>
    public static string Strftime(DateTime t, string format)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                sb.Append(format[i]);
                continue;
            }
            char d = format[++i];
            bool noPad = d == '-' && i + 1 < format.Length; // glibc's %-d: no zero padding
            if (noPad)
                d = format[++i];
            string Pad(int v) => noPad ? v.ToString(inv) : v.ToString("00", inv);
            sb.Append(d switch
            {
                'Y' => t.Year.ToString(inv),
                'y' => Pad(t.Year % 100),
                'm' => Pad(t.Month),
                'd' => Pad(t.Day),
                'e' => t.Day.ToString(inv).PadLeft(2),
                'H' => Pad(t.Hour),
                'I' => Pad(t.Hour % 12 == 0 ? 12 : t.Hour % 12),
                'M' => Pad(t.Minute),
                'S' => Pad(t.Second),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'b' => t.ToString("MMM", inv),
                'B' => t.ToString("MMMM", inv),
                'a' => t.ToString("ddd", inv),
                'A' => t.ToString("dddd", inv),
                'j' => noPad ? t.DayOfYear.ToString(inv) : t.DayOfYear.ToString("000", inv),
                '%' => "%",
                _ => throw new TemplateError($"strftime directive '%{d}' is not supported", notSupported: true),
            });
        }
        return sb.ToString();
    }

    // ---- access ----

    /// <summary><c>x.name</c>: like Jinja, a method of the object first, then a dict key.</summary>
    public static object? GetAttribute(object? target, string name)
    {
        switch (target)
        {
            case Undefined u:
                return new Undefined($"{u.Name}.{name}");
            case Namespace ns:
                return ns.Attributes.TryGetValue(name, out var a) ? a : new Undefined(name);
            case Dictionary<string, object?> d:
                if (DictMethod(d, name) is { } dm)
                    return dm;
                return d.TryGetValue(name, out var v) ? v : new Undefined(name);
            case string s:
                return (object?)StringMethod(s, name) ?? new Undefined($"method '{name}' of string");
            case List<object?>:
                return new Undefined($"method '{name}' of list");
            default:
                return new Undefined(name);
        }
    }

    /// <summary><c>x[key]</c>: an item first, then an attribute; missing items are undefined.</summary>
    public static object? GetItem(object? target, object? key)
    {
        switch (target)
        {
            case Undefined u:
                return new Undefined($"{u.Name}[{Py.Repr(key)}]");
            case Dictionary<string, object?> d when key is string k:
                return d.TryGetValue(k, out var v) ? v : GetAttribute(target, k);
            case Namespace when key is string k:
                return GetAttribute(target, k);
            case List<object?> list when key is long i:
                if (i < 0)
                    i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"[{key}]");
            case string s when key is long i:
                if (i < 0)
                    i += s.Length;
                return i >= 0 && i < s.Length ? s[(int)i].ToString() : new Undefined($"[{key}]");
            default:
                return new Undefined($"[{Py.Repr(key)}]");
        }
    }

    /// <summary>Python slicing, <c>xs[start:stop:step]</c> with negative indices and steps (<c>[::-1]</c> reverses).</summary>
    public static object? Slice(object? target, object? start, object? stop, object? step)
    {
        long st = step switch { null => 1, long l => l, _ => throw new TemplateError("slice step must be an integer") };
        if (st == 0)
            throw new TemplateError("slice step cannot be zero");
        int length = target switch
        {
            List<object?> l => l.Count,
            string s => s.Length,
            Undefined => 0,
            _ => throw new TemplateError($"cannot slice {Py.TypeName(target)}"),
        };
        long Bound(object? v, long dflt)
        {
            if (v == null)
                return dflt;
            if (v is not long i)
                throw new TemplateError("slice indices must be integers");
            if (i < 0)
                i += length;
            return st > 0 ? Math.Clamp(i, 0, length) : Math.Clamp(i, -1, length - 1);
        }
        long from = Bound(start, st > 0 ? 0 : length - 1);
        long to = Bound(stop, st > 0 ? length : -1);
        var picked = new List<int>();
        for (long i = from; st > 0 ? i < to : i > to; i += st)
            picked.Add((int)i);
        return target switch
        {
            List<object?> l => picked.Select(i => l[i]).ToList(),
            string s => string.Concat(picked.Select(i => s[i])),
            _ => new List<object?>(),
        };
    }

    /// <summary>What a for loop, <c>| list</c> and <c>in</c> see: list items, dict keys, string characters.</summary>
    public static List<object?> ToList(object? v) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
        string s => s.Select(c => (object?)c.ToString()).ToList(),
        Undefined => [],
        _ => throw new TemplateError($"{Py.TypeName(v)} is not iterable"),
    };

    // ---- operators ----

    public static object? Binary(string op, object? a, object? b)
    {
        switch (op)
        {
            case "==": return Py.Eq(a, b);
            case "!=": return !Py.Eq(a, b);
            case "<": return Py.Compare(a, b) < 0;
            case ">": return Py.Compare(a, b) > 0;
            case "<=": return Py.Compare(a, b) <= 0;
            case ">=": return Py.Compare(a, b) >= 0;
            case "in": return Contains(b, a);
            case "not in": return !Contains(b, a);
            case "~": return Py.Str(a) + Py.Str(b);
        }
        if (a is Undefined || b is Undefined)
            throw new TemplateError($"'{(a as Undefined ?? (Undefined)b!).Name}' is undefined");
        switch (op, a, b)
        {
            case ("+", string x, string y): return x + y;
            case ("+", List<object?> x, List<object?> y): return x.Concat(y).ToList();
            case ("*", string x, long n): return string.Concat(Enumerable.Repeat(x, (int)Math.Max(0, n)));
            case ("*", List<object?> x, long n): return Enumerable.Repeat(x, (int)Math.Max(0, n)).SelectMany(l => l).ToList();
        }
        if (!Py.IsNumber(a) || !Py.IsNumber(b))
            throw new TemplateError($"unsupported operand types for {op}: {Py.TypeName(a)} and {Py.TypeName(b)}");
        if (a is long i && b is long j)
        {
            switch (op)
            {
                case "+": return i + j;
                case "-": return i - j;
                case "*": return i * j;
                case "/": return j == 0 ? throw new TemplateError("division by zero") : (double)i / j;
                case "//": return j == 0 ? throw new TemplateError("division by zero") : (long)Math.Floor((double)i / j);
                case "%": return j == 0 ? throw new TemplateError("modulo by zero") : ((i % j) + j) % j;
                case "**": return j >= 0 ? (object)(long)Math.Pow(i, j) : Math.Pow(i, j);
            }
        }
        double x1 = Py.ToDouble(a), y1 = Py.ToDouble(b);
        return op switch
        {
            "+" => x1 + y1,
            "-" => x1 - y1,
            "*" => x1 * y1,
            "/" => y1 == 0 ? throw new TemplateError("division by zero") : x1 / y1,
            "//" => y1 == 0 ? throw new TemplateError("division by zero") : Math.Floor(x1 / y1),
            "%" => y1 == 0 ? throw new TemplateError("modulo by zero") : x1 - y1 * Math.Floor(x1 / y1),
            "**" => Math.Pow(x1, y1),
            _ => throw new TemplateError($"unknown operator {op}"),
        };
    }

    static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string t ? s.Contains(t, StringComparison.Ordinal) : throw new TemplateError($"'in <string>' needs a string, not {Py.TypeName(item)}"),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        List<object?> l => l.Any(x => Py.Eq(x, item)),
        Undefined => false,
        _ => throw new TemplateError($"cannot test membership in {Py.TypeName(container)}"),
    };

    // ---- tests ----

    public static bool ApplyTest(string name, object? v, List<object?> args)
    {
        object? Arg() => args.Count > 0 ? args[0] : throw new TemplateError($"test '{name}' needs an argument");
        return name switch
        {
            "defined" => v is not Undefined,
            "undefined" => v is Undefined,
            "none" => v == null,
            "boolean" => v is bool,
            "true" => v is true,
            "false" => v is false,
            "string" => v is string,
            "number" => v is long or double or bool, // Python's bool is a Number
            "integer" => v is long,
            "float" => v is double,
            "mapping" => v is Dictionary<string, object?>,
            // Jinja's Undefined is iterable (as empty); so are strings, lists and dicts.
            "iterable" => v is string or List<object?> or Dictionary<string, object?> or Undefined,
            "sequence" => v is string or List<object?> or Dictionary<string, object?>,
            "callable" => v is Callable,
            "lower" => v is string s && s == s.ToLowerInvariant(),
            "upper" => v is string s && s == s.ToUpperInvariant(),
            "even" => v is long l ? l % 2 == 0 : throw new TemplateError("test 'even' needs an integer"),
            "odd" => v is long l ? l % 2 != 0 : throw new TemplateError("test 'odd' needs an integer"),
            "divisibleby" => v is long l && Arg() is long m ? m != 0 && l % m == 0 : throw new TemplateError("test 'divisibleby' needs integers"),
            "eq" or "equalto" or "==" or "sameas" => Py.Eq(v, Arg()),
            "ne" or "!=" => !Py.Eq(v, Arg()),
            "lt" or "<" => Py.Compare(v, Arg()) < 0,
            "le" or "<=" => Py.Compare(v, Arg()) <= 0,
            "gt" or ">" => Py.Compare(v, Arg()) > 0,
            "ge" or ">=" => Py.Compare(v, Arg()) >= 0,
            "in" => Contains(Arg(), v),
            _ => throw new TemplateError($"test '{name}' is not supported", notSupported: true),
        };
    }

    // ---- filters ----

    public static object? ApplyFilter(string name, object? v, List<object?> args, Dictionary<string, object?> kwargs)
    {
        object? Arg(int i, string kw, object? dflt) => i < args.Count ? args[i] : kwargs.TryGetValue(kw, out var k) ? k : dflt;
        switch (name)
        {
            case "safe":
                return v;
            case "string":
                return Py.Str(v);
            case "trim":
                return PyStrip(Py.Str(v), Arg(0, "chars", null) as string, left: true, right: true);
            case "upper":
                return Py.Str(v).ToUpperInvariant();
            case "lower":
                return Py.Str(v).ToLowerInvariant();
            case "capitalize":
                return Capitalize(Py.Str(v));
            case "title":
                return Title(Py.Str(v));
            case "length" or "count":
                return (long)(v switch
                {
                    string s => s.EnumerateRunes().Count(), // Python counts code points
                    List<object?> l => l.Count,
                    Dictionary<string, object?> d => d.Count,
                    Namespace n => n.Attributes.Count,
                    Undefined => 0,
                    _ => throw new TemplateError($"{Py.TypeName(v)} has no length"),
                });
            case "tojson":
                {
                    var indent = Arg(0, "indent", null);
                    return Py.Json(v, indent switch { null => null, long n => (int)n, _ => throw new TemplateError("tojson indent must be an integer") });
                }
            case "default" or "d":
                {
                    bool boolean = Py.Truthy(Arg(1, "boolean", false));
                    return v is Undefined || (boolean && !Py.Truthy(v)) ? Arg(0, "default_value", "") : v;
                }
            case "first":
                {
                    var items = ToList(v);
                    return items.Count > 0 ? items[0] : new Undefined("first of empty sequence");
                }
            case "last":
                {
                    var items = ToList(v);
                    return items.Count > 0 ? items[^1] : new Undefined("last of empty sequence");
                }
            case "join":
                {
                    string sep = Py.Str(Arg(0, "d", ""));
                    var attribute = Arg(1, "attribute", null);
                    var items = ToList(v);
                    if (attribute != null)
                        items = items.Select(x => Attribute(x, attribute)).ToList();
                    return string.Join(sep, items.Select(Py.Str));
                }
            case "replace":
                {
                    string s = Py.Str(v), oldText = Py.Str(Arg(0, "old", "")), newText = Py.Str(Arg(1, "new", ""));
                    long count = Arg(2, "count", null) is long c ? c : -1;
                    return PyReplace(s, oldText, newText, count);
                }
            case "int":
                return ToInt(v, Arg(0, "default", 0L));
            case "float":
                return v switch
                {
                    long l => (double)l,
                    double d => d,
                    bool b => b ? 1.0 : 0.0,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                    _ => Arg(0, "default", 0.0),
                };
            case "abs":
                return v switch { long l => Math.Abs(l), double d => Math.Abs(d), _ => throw new TemplateError($"abs of {Py.TypeName(v)}") };
            case "items":
                return v switch
                {
                    Dictionary<string, object?> d => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
                    Undefined => new List<object?>(),
                    _ => throw new TemplateError($"items of {Py.TypeName(v)}: a mapping is needed"),
                };
            case "list":
                return ToList(v).ToList();
            case "reverse":
                return v is string rs ? new string(rs.Reverse().ToArray()) : Enumerable.Reverse(ToList(v)).ToList();
            case "unique":
                {
                    bool caseSensitive = Py.Truthy(Arg(0, "case_sensitive", false));
                    var attribute = Arg(1, "attribute", null);
                    var seen = new List<object?>();
                    var result = new List<object?>();
                    foreach (var x in ToList(v))
                    {
                        var key = attribute != null ? Attribute(x, attribute) : x;
                        if (!caseSensitive && key is string ks)
                            key = ks.ToLowerInvariant();
                        if (!seen.Any(s => Py.Eq(s, key)))
                        {
                            seen.Add(key);
                            result.Add(x);
                        }
                    }
                    return result;
                }
            case "selectattr" or "rejectattr":
                {
                    if (args.Count == 0)
                        throw new TemplateError($"{name} needs an attribute name");
                    bool keep = name == "selectattr";
                    var attribute = args[0];
                    return FalsyAsEmpty(v).Where(x => Select(Attribute(x, attribute), args.Skip(1).ToList()) == keep).ToList();
                }
            case "select" or "reject":
                {
                    bool keep = name == "select";
                    return FalsyAsEmpty(v).Where(x => Select(x, args) == keep).ToList();
                }
            case "map":
                {
                    if (kwargs.TryGetValue("attribute", out var attribute))
                    {
                        kwargs.TryGetValue("default", out var dflt);
                        return FalsyAsEmpty(v).Select(x =>
                        {
                            var a = Attribute(x, attribute);
                            return a is Undefined && kwargs.ContainsKey("default") ? dflt : a;
                        }).ToList();
                    }
                    if (args.Count == 0 || args[0] is not string filter)
                        throw new TemplateError("map needs a filter name or attribute=");
                    if (!Filters.Contains(filter))
                        throw new TemplateError($"filter '{filter}' is not supported", notSupported: true);
                    var rest = args.Skip(1).ToList();
                    return FalsyAsEmpty(v).Select(x => ApplyFilter(filter, x, rest, [])).ToList();
                }
            case "dictsort":
                {
                    if (v is not Dictionary<string, object?> d)
                        throw new TemplateError($"dictsort of {Py.TypeName(v)}: a mapping is needed");
                    bool caseSensitive = Py.Truthy(Arg(0, "case_sensitive", false));
                    bool byValue = Py.Str(Arg(1, "by", "key")) == "value";
                    bool reverse = Py.Truthy(Arg(2, "reverse", false));
                    var pairs = d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList();
                    return SortBy(pairs, x => ((List<object?>)x!)[byValue ? 1 : 0], caseSensitive, reverse);
                }
            case "sort":
                {
                    bool reverse = Py.Truthy(Arg(0, "reverse", false));
                    bool caseSensitive = Py.Truthy(Arg(1, "case_sensitive", false));
                    var attribute = Arg(2, "attribute", null);
                    return SortBy(ToList(v).ToList(), x => attribute != null ? Attribute(x, attribute) : x, caseSensitive, reverse);
                }
            case "min" or "max":
                {
                    bool caseSensitive = Py.Truthy(Arg(0, "case_sensitive", false));
                    var attribute = Arg(1, "attribute", null);
                    var sorted = SortBy(ToList(v).ToList(), x => attribute != null ? Attribute(x, attribute) : x, caseSensitive, reverse: false);
                    return sorted.Count == 0 ? new Undefined($"{name} of empty sequence") : name == "min" ? sorted[0] : sorted[^1];
                }
            case "indent":
                {
                    var width = Arg(0, "width", 4L);
                    string pad = width is string ws ? ws : new string(' ', (int)(width as long? ?? 4));
                    bool first = Py.Truthy(Arg(1, "first", false)), blank = Py.Truthy(Arg(2, "blank", false));
                    var lines = Py.Str(v).Split('\n');
                    for (int i = 0; i < lines.Length; i++)
                        if ((i > 0 || first) && (blank || lines[i].Trim().Length > 0))
                            lines[i] = pad + lines[i];
                    return string.Join('\n', lines);
                }
            default:
                throw new TemplateError($"filter '{name}' is not supported", notSupported: true);
        }
    }

    /// <summary>Jinja's select, reject and map loop only over a truthy value, so none gives nothing.</summary>
    static List<object?> FalsyAsEmpty(object? v) => Py.Truthy(v) ? ToList(v) : [];

    /// <summary>A stable sort (Python's sorted) by a key; strings compare case-insensitively unless asked.</summary>
    static List<object?> SortBy(List<object?> items, Func<object?, object?> key, bool caseSensitive, bool reverse)
    {
        object? Key(object? x)
        {
            var k = key(x);
            return !caseSensitive && k is string s ? s.ToLowerInvariant() : k;
        }
        var sorted = items.Select((x, i) => (Item: x, Key: Key(x), Index: i)).ToList();
        sorted.Sort((a, b) =>
        {
            int c = Py.Compare(a.Key, b.Key);
            return c != 0 ? (reverse ? -c : c) : a.Index.CompareTo(b.Index);
        });
        return sorted.Select(x => x.Item).ToList();
    }

    /// <summary>select/reject: with no test name, the value's truthiness; else the named test.</summary>
    static bool Select(object? value, List<object?> testArgs)
    {
        if (testArgs.Count == 0)
            return Py.Truthy(value);
        if (testArgs[0] is not string test || !Tests.Contains(test))
            throw new TemplateError($"test '{Py.Str(testArgs[0])}' is not supported", notSupported: true);
        return ApplyTest(test, value, testArgs.Skip(1).ToList());
    }

    /// <summary>Jinja's attribute= argument: a dotted path ("function.name") or an integer index.</summary>
    static object? Attribute(object? item, object? attribute)
    {
        if (attribute is long index)
            return GetItem(item, index);
        foreach (var part in Py.Str(attribute).Split('.'))
            item = long.TryParse(part, out var i) && item is List<object?> ? GetItem(item, i) : GetItem(item, part);
        return item;
    }

    static object? ToInt(object? v, object? dflt) => v switch
    {
        long l => l,
        double d => (long)Math.Truncate(d),
        bool b => b ? 1L : 0L,
        string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => l,
        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => (long)Math.Truncate(d),
        _ => dflt,
    };

    // ---- methods ----

    static Callable? DictMethod(Dictionary<string, object?> d, string name) => name switch
    {
        "get" => new Callable("dict.get", (args, kwargs) =>
            args.Count > 0 && args[0] is string k && d.TryGetValue(k, out var v) ? v
            : args.Count > 1 ? args[1] : kwargs.TryGetValue("default", out var dflt) ? dflt : null),
        "items" => new Callable("dict.items", (_, _) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()),
        "keys" => new Callable("dict.keys", (_, _) => d.Keys.Cast<object?>().ToList()),
        "values" => new Callable("dict.values", (_, _) => d.Values.ToList()),
        _ => null,
    };

    static Callable? StringMethod(string s, string name)
    {
        static string? Chars(List<object?> args) => args.Count > 0 ? args[0] as string : null;
        return name switch
        {
            "strip" => new Callable("strip", (a, _) => PyStrip(s, Chars(a), true, true)),
            "lstrip" => new Callable("lstrip", (a, _) => PyStrip(s, Chars(a), true, false)),
            "rstrip" => new Callable("rstrip", (a, _) => PyStrip(s, Chars(a), false, true)),
            "upper" => new Callable("upper", (_, _) => s.ToUpperInvariant()),
            "lower" => new Callable("lower", (_, _) => s.ToLowerInvariant()),
            "title" => new Callable("title", (_, _) => Title(s)),
            "capitalize" => new Callable("capitalize", (_, _) => Capitalize(s)),
            "startswith" => new Callable("startswith", (a, _) => Affix(a, p => s.StartsWith(p, StringComparison.Ordinal))),
            "endswith" => new Callable("endswith", (a, _) => Affix(a, p => s.EndsWith(p, StringComparison.Ordinal))),
            "replace" => new Callable("replace", (a, _) =>
                PyReplace(s, a.Count > 0 ? Py.Str(a[0]) : "", a.Count > 1 ? Py.Str(a[1]) : "", a.Count > 2 && a[2] is long c ? c : -1)),
            "split" => new Callable("split", (a, kw) =>
            {
                var sep = a.Count > 0 ? a[0] : kw.GetValueOrDefault("sep");
                var max = a.Count > 1 ? a[1] : kw.GetValueOrDefault("maxsplit");
                return PySplit(s, sep as string, max is long m ? m : -1);
            }),
            "find" => new Callable("find", (a, _) => (long)s.IndexOf(a.Count > 0 ? Py.Str(a[0]) : "", StringComparison.Ordinal)),
            "count" => new Callable("count", (a, _) =>
            {
                string sub = a.Count > 0 ? Py.Str(a[0]) : "";
                if (sub.Length == 0)
                    return (long)s.Length + 1;
                long n = 0;
                for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal))
                    n++;
                return n;
            }),
            "join" => new Callable("join", (a, _) => string.Join(s, ToList(a.Count > 0 ? a[0] : null).Select(Py.Str))),
            "format" => new Callable("format", (a, kw) => Format(s, a, kw)),
            "isdigit" => new Callable("isdigit", (_, _) => s.Length > 0 && s.All(char.IsDigit)),
            _ => null,
        };
    }

    /// <summary>Python's str.format for plain fields: {}, {0}, {name}, and {{ }} escapes; no format specs.</summary>
    static string Format(string s, List<object?> args, Dictionary<string, object?> kwargs)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if ((c == '{' || c == '}') && i + 1 < s.Length && s[i + 1] == c)
            {
                sb.Append(c);
                i++;
                continue;
            }
            if (c != '{')
            {
                sb.Append(c);
                continue;
            }
            int close = s.IndexOf('}', i);
            if (close < 0)
                throw new TemplateError("format: '{' is not closed");
            string field = s[(i + 1)..close];
            if (field.Contains(':') || field.Contains('!') || field.Contains('.') || field.Contains('['))
                throw new TemplateError($"format field '{{{field}}}' is not supported", notSupported: true);
            object? value = field.Length == 0 ? (auto < args.Count ? args[auto++] : throw new TemplateError("format: not enough arguments"))
                : int.TryParse(field, out int n) ? (n < args.Count ? args[n] : throw new TemplateError($"format: no argument {n}"))
                : kwargs.TryGetValue(field, out var kv) ? kv : throw new TemplateError($"format: no argument '{field}'");
            sb.Append(Py.Str(value));
            i = close;
        }
        return sb.ToString();
    }

    static bool Affix(List<object?> args, Func<string, bool> test) => args.Count > 0 ? args[0] switch
    {
        string p => test(p),
        List<object?> options => options.Any(o => o is string p && test(p)), // Python accepts a tuple of prefixes
        _ => throw new TemplateError("startswith/endswith need a string"),
    } : throw new TemplateError("startswith/endswith need an argument");

    static string PyStrip(string s, string? chars, bool left, bool right)
    {
        int start = 0, end = s.Length;
        bool Strip(char c) => chars == null ? char.IsWhiteSpace(c) : chars.Contains(c);
        if (left)
            while (start < end && Strip(s[start]))
                start++;
        if (right)
            while (end > start && Strip(s[end - 1]))
                end--;
        return s[start..end];
    }

    static string PyReplace(string s, string oldText, string newText, long count)
    {
        if (count < 0)
            return oldText.Length == 0 ? s : s.Replace(oldText, newText, StringComparison.Ordinal);
        var sb = new StringBuilder();
        int pos = 0;
        for (long n = 0; n < count && oldText.Length > 0; n++)
        {
            int i = s.IndexOf(oldText, pos, StringComparison.Ordinal);
            if (i < 0)
                break;
            sb.Append(s, pos, i - pos).Append(newText);
            pos = i + oldText.Length;
        }
        return sb.Append(s, pos, s.Length - pos).ToString();
    }

    static List<object?> PySplit(string s, string? sep, long maxSplit)
    {
        var result = new List<object?>();
        if (sep == null)
        {
            // Python's split() with no separator: runs of whitespace, no empty parts.
            int i = 0;
            while (true)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i]))
                    i++;
                if (i >= s.Length)
                    break;
                if (maxSplit >= 0 && result.Count == maxSplit)
                {
                    result.Add(s[i..].TrimEnd());
                    break;
                }
                int j = i;
                while (j < s.Length && !char.IsWhiteSpace(s[j]))
                    j++;
                result.Add(s[i..j]);
                i = j;
            }
            return result;
        }
        if (sep.Length == 0)
            throw new TemplateError("split: empty separator");
        int pos = 0;
        while (maxSplit < 0 || result.Count < maxSplit)
        {
            int k = s.IndexOf(sep, pos, StringComparison.Ordinal);
            if (k < 0)
                break;
            result.Add(s[pos..k]);
            pos = k + sep.Length;
        }
        result.Add(s[pos..]);
        return result;
    }

    static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Jinja's title: each word (after whitespace, '-', or an opening bracket) capitalized.</summary>
    static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool wordStart = true;
        foreach (char c in s)
        {
            sb.Append(wordStart ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            wordStart = char.IsWhiteSpace(c) || c is '-' or '(' or '{' or '[' or '<';
        }
        return sb.ToString();
    }
}
