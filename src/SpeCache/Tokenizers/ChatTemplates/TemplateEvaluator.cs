using System.Text;

namespace SpeCache.Tokenizers.ChatTemplates;

/// <summary>An error raised while evaluating, before the evaluator adds where it happened.</summary>
sealed class TemplateError(string message, bool notSupported = false, bool raised = false) : Exception(message)
{
    public bool NotSupported { get; } = notSupported;
    /// <summary>The template called raise_exception(...).</summary>
    public bool Raised { get; } = raised;
}

/// <summary>Variables visible at one point: a for-loop iteration or macro call opens a child scope,
/// which is why <c>set</c> inside a loop does not leak out (Jinja's rule; templates use namespace()).</summary>
sealed class Scope(Scope? parent)
{
    readonly Dictionary<string, object?> _vars = [];

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s != null; s = s.Parent)
            if (s._vars.TryGetValue(name, out value))
                return true;
        value = null;
        return false;
    }

    public void Set(string name, object? value) => _vars[name] = value;

    public Scope? Parent { get; } = parent;
}

/// <summary>Walks the syntax tree and writes the rendered text.</summary>
sealed class TemplateEvaluator(Func<DateTime> clock)
{
    enum Flow { Normal, Break, Continue }

    public string Render(List<Node> program, Scope scope)
    {
        var sb = new StringBuilder();
        ExecBody(program, scope, sb);
        return sb.ToString();
    }

    /// <summary>The global functions every template sees (Hugging Face adds raise_exception and strftime_now to Jinja's).</summary>
    public Scope GlobalScope()
    {
        var scope = new Scope(null);
        foreach (var (name, fn) in TemplateBuiltins.Globals(clock))
            scope.Set(name, fn);
        return scope;
    }

    Flow ExecBody(List<Node> body, Scope scope, StringBuilder sb)
    {
        foreach (var node in body)
        {
            var flow = Exec(node, scope, sb);
            if (flow != Flow.Normal)
                return flow;
        }
        return Flow.Normal;
    }

    Flow Exec(Node node, Scope scope, StringBuilder sb)
    {
        switch (node)
        {
            case TextNode t:
                sb.Append(t.Text);
                return Flow.Normal;
            case OutputNode o:
                sb.Append(Py.Str(Eval(o.Value, scope)));
                return Flow.Normal;
            case IfNode i:
                foreach (var (condition, body) in i.Branches)
                    if (Py.Truthy(Eval(condition, scope)))
                        return ExecBody(body, scope, sb);
                return ExecBody(i.Else, scope, sb);
            case ForNode f:
                return ExecFor(f, scope, sb);
            case SetNode s:
                {
                    var value = Eval(s.Value, scope);
                    if (s.Attribute == null)
                        scope.Set(s.Name, value);
                    else if (scope.TryGet(s.Name, out var target) && target is Namespace ns)
                        ns.Attributes[s.Attribute] = value;
                    else
                        throw Fail(s, $"cannot set '{s.Name}.{s.Attribute}': '{s.Name}' is not a namespace()");
                    return Flow.Normal;
                }
            case SetBlockNode b:
                {
                    var captured = new StringBuilder();
                    ExecBody(b.Body, scope, captured);
                    scope.Set(b.Name, captured.ToString());
                    return Flow.Normal;
                }
            case MacroNode m:
                scope.Set(m.Name, MakeMacro(m, scope));
                return Flow.Normal;
            case BreakNode:
                return Flow.Break;
            case ContinueNode:
                return Flow.Continue;
            default:
                throw Fail(node, $"cannot execute {node.GetType().Name}");
        }
    }

    Flow ExecFor(ForNode f, Scope scope, StringBuilder sb)
    {
        var source = Eval(f.Iterable, scope);
        if (source == null)
            throw Fail(f.Iterable, "cannot loop over none");
        var items = TemplateBuiltins.ToList(source);
        if (f.Filter != null)
        {
            // `for x in xs if cond` filters first, so loop.index and loop.length count kept items only.
            var kept = new List<object?>();
            foreach (var item in items)
            {
                var probe = new Scope(scope);
                Bind(f, probe, item);
                if (Py.Truthy(Eval(f.Filter, probe)))
                    kept.Add(item);
            }
            items = kept;
        }
        if (items.Count == 0)
            return ExecBody(f.Else, scope, sb);

        for (int i = 0; i < items.Count; i++)
        {
            var iteration = new Scope(scope);
            Bind(f, iteration, items[i]);
            iteration.Set("loop", new Dictionary<string, object?>
            {
                ["index"] = (long)(i + 1),
                ["index0"] = (long)i,
                ["revindex"] = (long)(items.Count - i),
                ["revindex0"] = (long)(items.Count - i - 1),
                ["first"] = i == 0,
                ["last"] = i == items.Count - 1,
                ["length"] = (long)items.Count,
                ["previtem"] = i > 0 ? items[i - 1] : new Undefined("loop.previtem"),
                ["nextitem"] = i + 1 < items.Count ? items[i + 1] : new Undefined("loop.nextitem"),
            });
            if (ExecBody(f.Body, iteration, sb) == Flow.Break)
                break;
        }
        return Flow.Normal;
    }

    void Bind(ForNode f, Scope scope, object? item)
    {
        if (f.Targets.Count == 1)
        {
            scope.Set(f.Targets[0], item);
            return;
        }
        if (item is not List<object?> parts || parts.Count != f.Targets.Count)
            throw Fail(f, $"cannot unpack {Py.TypeName(item)} into {f.Targets.Count} loop variables");
        for (int i = 0; i < parts.Count; i++)
            scope.Set(f.Targets[i], parts[i]);
    }

    Callable MakeMacro(MacroNode m, Scope definedIn) => new(m.Name, (args, kwargs) =>
    {
        if (args.Count > m.Parameters.Count)
            throw new TemplateError($"macro '{m.Name}' takes {m.Parameters.Count} arguments, got {args.Count}");
        var scope = new Scope(definedIn);
        for (int i = 0; i < m.Parameters.Count; i++)
        {
            var (name, def) = m.Parameters[i];
            object? value = i < args.Count ? args[i]
                : kwargs.TryGetValue(name, out var kw) ? kw
                : def != null ? Eval(def, scope)
                : new Undefined(name);
            scope.Set(name, value);
        }
        var sb = new StringBuilder();
        ExecBody(m.Body, scope, sb);
        return sb.ToString();
    });

    // ---- expressions ----

    object? Eval(Expr e, Scope scope)
    {
        try
        {
            return EvalCore(e, scope);
        }
        catch (TemplateError err)
        {
            if (err.NotSupported)
                throw new NotSupportedException($"chat template: {err.Message} ({e.Where})");
            if (err.Raised)
                throw new ChatTemplateException($"chat template raised an error: {err.Message} ({e.Where})", raisedByTemplate: true);
            throw new ChatTemplateException($"chat template: {err.Message} ({e.Where})");
        }
        catch (InvalidOperationException err)
        {
            throw new ChatTemplateException($"chat template: {err.Message} ({e.Where})");
        }
    }

    object? EvalCore(Expr e, Scope scope)
    {
        switch (e)
        {
            case LiteralExpr l:
                return l.Value;
            case NameExpr n:
                return scope.TryGet(n.Name, out var v) ? v : new Undefined(n.Name);
            case ListExpr l:
                return l.Items.Select(x => Eval(x, scope)).ToList();
            case DictExpr d:
                {
                    var dict = new Dictionary<string, object?>();
                    foreach (var (k, val) in d.Items)
                    {
                        // Messages and tools come as JSON, whose keys are strings; we model dicts that way.
                        if (Eval(k, scope) is not string key)
                            throw new TemplateError("dict keys other than strings are not supported", notSupported: true);
                        dict[key] = Eval(val, scope);
                    }
                    return dict;
                }
            case AttributeExpr a:
                return TemplateBuiltins.GetAttribute(Eval(a.Target, scope), a.Name);
            case IndexExpr i:
                return TemplateBuiltins.GetItem(Eval(i.Target, scope), Eval(i.Index, scope));
            case SliceExpr s:
                return TemplateBuiltins.Slice(Eval(s.Target, scope), Optional(s.Start, scope), Optional(s.Stop, scope), Optional(s.Step, scope));
            case CallExpr c:
                {
                    var target = Eval(c.Target, scope);
                    var (args, kwargs) = Arguments(c.Args, c.Kwargs, scope);
                    return target switch
                    {
                        Callable fn => fn.Invoke(args, kwargs),
                        Undefined u => throw new TemplateError(u.Name.StartsWith("method ", StringComparison.Ordinal)
                            ? $"{u.Name} is not supported" : $"'{u.Name}' is undefined and cannot be called", notSupported: u.Name.StartsWith("method ", StringComparison.Ordinal)),
                        _ => throw new TemplateError($"{Py.TypeName(target)} is not callable"),
                    };
                }
            case FilterExpr f:
                {
                    var value = Eval(f.Value, scope);
                    var (args, kwargs) = Arguments(f.Args, f.Kwargs, scope);
                    return TemplateBuiltins.ApplyFilter(f.Name, value, args, kwargs);
                }
            case TestExpr t:
                {
                    var value = Eval(t.Value, scope);
                    var args = t.Args.Select(x => Eval(x, scope)).ToList();
                    return TemplateBuiltins.ApplyTest(t.Name, value, args) != t.Negated;
                }
            case UnaryExpr u:
                {
                    var operand = Eval(u.Operand, scope);
                    if (u.Op == "not")
                        return !Py.Truthy(operand);
                    return (u.Op, operand) switch
                    {
                        ("-", long l) => -l,
                        ("-", double d) => -d,
                        ("+", long or double) => operand,
                        _ => throw new TemplateError($"bad operand for unary {u.Op}: {Py.TypeName(operand)}"),
                    };
                }
            case BinaryExpr b:
                {
                    var left = Eval(b.Left, scope);
                    if (b.Op == "and")
                        return Py.Truthy(left) ? Eval(b.Right, scope) : left;
                    if (b.Op == "or")
                        return Py.Truthy(left) ? left : Eval(b.Right, scope);
                    return TemplateBuiltins.Binary(b.Op, left, Eval(b.Right, scope));
                }
            case ConditionalExpr c:
                return Py.Truthy(Eval(c.Condition, scope)) ? Eval(c.Then, scope)
                    : c.Otherwise != null ? Eval(c.Otherwise, scope) : new Undefined("conditional without else");
            default:
                throw new TemplateError($"cannot evaluate {e.GetType().Name}");
        }
    }

    object? Optional(Expr? e, Scope scope) => e == null ? null : Eval(e, scope);

    (List<object?>, Dictionary<string, object?>) Arguments(List<Expr> args, List<(string Name, Expr Value)> kwargs, Scope scope)
    {
        var values = args.Select(a => Eval(a, scope)).ToList();
        var named = new Dictionary<string, object?>();
        foreach (var (name, value) in kwargs)
            named[name] = Eval(value, scope);
        return (values, named);
    }

    static ChatTemplateException Fail(Node at, string message) => new($"chat template: {message} ({at.Where})");
}
