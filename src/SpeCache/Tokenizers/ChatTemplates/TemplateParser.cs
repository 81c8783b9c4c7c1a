using System.Globalization;

namespace SpeCache.Tokenizers.ChatTemplates;

/// <summary>
/// Recursive-descent parser from tokens to <see cref="Node"/>s. Expression precedence follows Jinja's
/// own parser, lowest first: conditional (<c>a if b else c</c>), <c>or</c>, <c>and</c>, <c>not</c>,
/// comparisons and <c>in</c>, <c>+ -</c>, <c>~</c>, <c>* / // %</c>, <c>**</c>, unary minus, then a
/// primary with its postfixes (<c>.attr</c>, <c>[i]</c>, <c>(args)</c>) and filters/tests, which bind
/// tighter than any binary operator (<c>'a' + x | trim</c> trims only x).
/// Unknown statements, filters and tests are rejected here, so a template we cannot render fails when
/// the model is loaded rather than in the middle of a chat.
/// </summary>
sealed class TemplateParser
{
    readonly List<Token> _tokens;
    int _pos;

    TemplateParser(List<Token> tokens) => _tokens = tokens;

    public static List<Node> Parse(string source)
    {
        var parser = new TemplateParser(TemplateLexer.Tokenize(source));
        var body = parser.ParseBody(out var stop);
        if (stop != null)
            throw Error($"'{stop}' without a matching opening tag", parser.Current);
        return body;
    }

    Token Current => _tokens[_pos];
    Token Peek(int ahead = 1) => _tokens[Math.Min(_pos + ahead, _tokens.Count - 1)];

    /// <summary>Parses nodes until the end or an end/else-type block keyword, which is returned unconsumed (after '{%').</summary>
    List<Node> ParseBody(out string? stopKeyword, params string[] stops)
    {
        var nodes = new List<Node>();
        while (true)
        {
            var t = Current;
            switch (t.Kind)
            {
                case TokenKind.End:
                    stopKeyword = null;
                    return nodes;
                case TokenKind.Text:
                    nodes.Add(new TextNode(t.Value, t.Line, t.Column));
                    _pos++;
                    break;
                case TokenKind.VarBegin:
                    _pos++;
                    var e = ParseExpression();
                    Expect(TokenKind.VarEnd, "}}");
                    nodes.Add(new OutputNode(e, t.Line, t.Column));
                    break;
                case TokenKind.BlockBegin:
                    var keyword = Peek();
                    if (keyword.Kind != TokenKind.Name)
                        throw Error($"expected a statement name, got {keyword}", keyword);
                    if (stops.Contains(keyword.Value))
                    {
                        _pos++; // leave the keyword as Current for the caller
                        stopKeyword = keyword.Value;
                        return nodes;
                    }
                    _pos += 2;
                    var statement = ParseStatement(keyword);
                    if (statement != null)
                        nodes.Add(statement);
                    break;
                default:
                    throw Error($"unexpected {t}", t);
            }
        }
    }

    Node? ParseStatement(Token keyword)
    {
        switch (keyword.Value)
        {
            case "if": return ParseIf(keyword);
            case "for": return ParseFor(keyword);
            case "set": return ParseSet(keyword);
            case "macro": return ParseMacro(keyword);
            case "break":
                Expect(TokenKind.BlockEnd, "%}");
                return new BreakNode(keyword.Line, keyword.Column);
            case "continue":
                Expect(TokenKind.BlockEnd, "%}");
                return new ContinueNode(keyword.Line, keyword.Column);
            case "generation":
                // Hugging Face's {% generation %} only marks assistant text for training masks; it renders its body.
                Expect(TokenKind.BlockEnd, "%}");
                var body = ParseBody(out var stop, "endgeneration");
                EndBlock(stop, "endgeneration", keyword);
                return new IfNode([(new LiteralExpr(true, keyword.Line, keyword.Column), body)], [], keyword.Line, keyword.Column);
            default:
                if (keyword.Value.StartsWith("end", StringComparison.Ordinal) || keyword.Value is "elif" or "else")
                    throw Error($"'{keyword.Value}' without a matching opening tag", keyword);
                throw new NotSupportedException($"chat template: statement '{keyword.Value}' is not supported ({Where(keyword)})");
        }
    }

    IfNode ParseIf(Token keyword)
    {
        var branches = new List<(Expr, List<Node>)>();
        var condition = ParseExpression();
        Expect(TokenKind.BlockEnd, "%}");
        while (true)
        {
            var body = ParseBody(out var stop, "elif", "else", "endif");
            branches.Add((condition, body));
            if (stop == "elif")
            {
                _pos++;
                condition = ParseExpression();
                Expect(TokenKind.BlockEnd, "%}");
                continue;
            }
            var elseBody = new List<Node>();
            if (stop == "else")
            {
                _pos++;
                Expect(TokenKind.BlockEnd, "%}");
                elseBody = ParseBody(out stop, "endif");
            }
            EndBlock(stop, "endif", keyword);
            return new IfNode(branches, elseBody, keyword.Line, keyword.Column);
        }
    }

    ForNode ParseFor(Token keyword)
    {
        var targets = new List<string> { ExpectName() };
        while (IsOp(","))
        {
            _pos++;
            targets.Add(ExpectName());
        }
        ExpectKeyword("in");
        // The iterable stops before a trailing 'if' filter, so no conditional expression here.
        var iterable = ParseOr();
        Expr? filter = null;
        if (IsName("if"))
        {
            _pos++;
            filter = ParseOr();
        }
        if (IsName("recursive"))
            throw new NotSupportedException($"chat template: recursive for loops are not supported ({Where(Current)})");
        Expect(TokenKind.BlockEnd, "%}");
        var body = ParseBody(out var stop, "else", "endfor");
        var elseBody = new List<Node>();
        if (stop == "else")
        {
            _pos++;
            Expect(TokenKind.BlockEnd, "%}");
            elseBody = ParseBody(out stop, "endfor");
        }
        EndBlock(stop, "endfor", keyword);
        return new ForNode(targets, iterable, filter, body, elseBody, keyword.Line, keyword.Column);
    }

    Node ParseSet(Token keyword)
    {
        string name = ExpectName();
        string? attribute = null;
        if (IsOp("."))
        {
            _pos++;
            attribute = ExpectName();
        }
        if (IsOp(","))
            throw new NotSupportedException($"chat template: tuple assignment in 'set' is not supported ({Where(Current)})");
        if (attribute == null && Current.Kind == TokenKind.BlockEnd)
        {
            _pos++;
            var body = ParseBody(out var stop, "endset");
            EndBlock(stop, "endset", keyword);
            return new SetBlockNode(name, body, keyword.Line, keyword.Column);
        }
        ExpectOp("=");
        var value = ParseExpression();
        Expect(TokenKind.BlockEnd, "%}");
        return new SetNode(name, attribute, value, keyword.Line, keyword.Column);
    }

    MacroNode ParseMacro(Token keyword)
    {
        string name = ExpectName();
        ExpectOp("(");
        var parameters = new List<(string, Expr?)>();
        while (!IsOp(")"))
        {
            string p = ExpectName();
            Expr? def = null;
            if (IsOp("="))
            {
                _pos++;
                def = ParseExpression();
            }
            parameters.Add((p, def));
            if (!IsOp(","))
                break;
            _pos++;
        }
        ExpectOp(")");
        Expect(TokenKind.BlockEnd, "%}");
        var body = ParseBody(out var stop, "endmacro");
        EndBlock(stop, "endmacro", keyword);
        return new MacroNode(name, parameters, body, keyword.Line, keyword.Column);
    }

    void EndBlock(string? stop, string expected, Token opener)
    {
        if (stop != expected)
            throw Error($"'{opener.Value}' opened here is never closed with '{expected}'", opener);
        _pos++;
        Expect(TokenKind.BlockEnd, "%}");
    }

    // ---- expressions, lowest precedence first ----

    Expr ParseExpression()
    {
        var start = Current;
        var value = ParseOr();
        if (!IsName("if"))
            return value;
        _pos++;
        var condition = ParseOr();
        Expr? otherwise = null;
        if (IsName("else"))
        {
            _pos++;
            otherwise = ParseExpression();
        }
        return new ConditionalExpr(condition, value, otherwise, start.Line, start.Column);
    }

    Expr ParseOr()
    {
        var left = ParseAnd();
        while (IsName("or"))
        {
            var op = Next();
            left = new BinaryExpr("or", left, ParseAnd(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsName("and"))
        {
            var op = Next();
            left = new BinaryExpr("and", left, ParseNot(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseNot()
    {
        if (IsName("not"))
        {
            var op = Next();
            return new UnaryExpr("not", ParseNot(), op.Line, op.Column);
        }
        return ParseCompare();
    }

    static readonly HashSet<string> CompareOps = ["==", "!=", "<", ">", "<=", ">="];

    Expr ParseCompare()
    {
        var left = ParseAdd();
        Expr? result = null;
        while (true)
        {
            var op = Current;
            string name;
            if (op.Kind == TokenKind.Operator && CompareOps.Contains(op.Value))
                name = op.Value;
            else if (IsName("in"))
                name = "in";
            else if (IsName("not") && Peek().Kind == TokenKind.Name && Peek().Value == "in")
            {
                _pos++;
                name = "not in";
            }
            else
                return result ?? left;
            _pos++;
            var right = ParseAdd();
            // a < b < c means (a < b) and (b < c), as in Python.
            var comparison = new BinaryExpr(name, left, right, op.Line, op.Column);
            result = result == null ? comparison : new BinaryExpr("and", result, comparison, op.Line, op.Column);
            left = right;
        }
    }

    Expr ParseAdd()
    {
        var left = ParseConcat();
        while (IsOp("+") || IsOp("-"))
        {
            var op = Next();
            left = new BinaryExpr(op.Value, left, ParseConcat(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseConcat()
    {
        var left = ParseMultiply();
        while (IsOp("~"))
        {
            var op = Next();
            left = new BinaryExpr("~", left, ParseMultiply(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseMultiply()
    {
        var left = ParsePower();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%"))
        {
            var op = Next();
            left = new BinaryExpr(op.Value, left, ParsePower(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParsePower()
    {
        var left = ParseUnary();
        while (IsOp("**"))
        {
            var op = Next();
            left = new BinaryExpr("**", left, ParseUnary(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseUnary()
    {
        if (IsOp("-") || IsOp("+"))
        {
            var op = Next();
            return ParseFilters(new UnaryExpr(op.Value, ParseUnaryNoFilter(), op.Line, op.Column));
        }
        return ParseFilters(ParsePostfix(ParsePrimary()));
    }

    Expr ParseUnaryNoFilter()
    {
        if (IsOp("-") || IsOp("+"))
        {
            var op = Next();
            return new UnaryExpr(op.Value, ParseUnaryNoFilter(), op.Line, op.Column);
        }
        return ParsePostfix(ParsePrimary());
    }

    Expr ParseFilters(Expr value)
    {
        while (true)
        {
            if (IsOp("|"))
            {
                _pos++;
                var name = Current;
                string filter = ExpectName();
                if (!TemplateBuiltins.Filters.Contains(filter))
                    throw new NotSupportedException($"chat template: filter '{filter}' is not supported ({Where(name)})");
                var args = new List<Expr>();
                var kwargs = new List<(string, Expr)>();
                if (IsOp("("))
                    ParseArguments(args, kwargs);
                value = ParsePostfix(new FilterExpr(value, filter, args, kwargs, name.Line, name.Column));
            }
            else if (IsName("is"))
            {
                _pos++;
                bool negated = false;
                if (IsName("not"))
                {
                    _pos++;
                    negated = true;
                }
                var name = Current;
                string test = Current.Kind == TokenKind.Operator && CompareOps.Contains(Current.Value) ? Next().Value : ExpectName();
                if (!TemplateBuiltins.Tests.Contains(test))
                    throw new NotSupportedException($"chat template: test '{test}' is not supported ({Where(name)})");
                var args = new List<Expr>();
                if (IsOp("("))
                {
                    var kwargs = new List<(string, Expr)>();
                    ParseArguments(args, kwargs);
                }
                else if (Current.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
                         || (Current.Kind == TokenKind.Name && Current.Value is not ("and" or "or" or "else" or "if" or "is" or "not" or "in")))
                    args.Add(ParsePostfix(ParsePrimary())); // Jinja allows one bare argument: `x is divisibleby 3`
                value = new TestExpr(value, test, args, negated, name.Line, name.Column);
            }
            else
                return value;
        }
    }

    Expr ParsePrimary()
    {
        var t = Current;
        switch (t.Kind)
        {
            case TokenKind.Name:
                _pos++;
                return t.Value switch
                {
                    "true" or "True" => new LiteralExpr(true, t.Line, t.Column),
                    "false" or "False" => new LiteralExpr(false, t.Line, t.Column),
                    "none" or "None" => new LiteralExpr(null, t.Line, t.Column),
                    _ => new NameExpr(t.Value, t.Line, t.Column),
                };
            case TokenKind.String:
                _pos++;
                string s = t.Value;
                while (Current.Kind == TokenKind.String) // adjacent literals concatenate, as in Python
                    s += Next().Value;
                return new LiteralExpr(s, t.Line, t.Column);
            case TokenKind.Integer:
                _pos++;
                return new LiteralExpr(long.Parse(t.Value, CultureInfo.InvariantCulture), t.Line, t.Column);
            case TokenKind.Float:
                _pos++;
                return new LiteralExpr(double.Parse(t.Value, CultureInfo.InvariantCulture), t.Line, t.Column);
            case TokenKind.Operator when t.Value == "(":
                {
                    _pos++;
                    if (IsOp(")"))
                    {
                        _pos++;
                        return new ListExpr([], t.Line, t.Column); // () is an empty tuple; we model tuples as lists
                    }
                    var first = ParseExpression();
                    if (IsOp(")"))
                    {
                        _pos++;
                        return first;
                    }
                    var items = new List<Expr> { first };
                    while (IsOp(","))
                    {
                        _pos++;
                        if (IsOp(")"))
                            break;
                        items.Add(ParseExpression());
                    }
                    ExpectOp(")");
                    return new ListExpr(items, t.Line, t.Column);
                }
            case TokenKind.Operator when t.Value == "[":
                {
                    _pos++;
                    var items = new List<Expr>();
                    while (!IsOp("]"))
                    {
                        items.Add(ParseExpression());
                        if (!IsOp(","))
                            break;
                        _pos++;
                    }
                    ExpectOp("]");
                    return new ListExpr(items, t.Line, t.Column);
                }
            case TokenKind.Operator when t.Value == "{":
                {
                    _pos++;
                    var items = new List<(Expr, Expr)>();
                    while (!IsOp("}"))
                    {
                        var key = ParseExpression();
                        ExpectOp(":");
                        items.Add((key, ParseExpression()));
                        if (!IsOp(","))
                            break;
                        _pos++;
                    }
                    ExpectOp("}");
                    return new DictExpr(items, t.Line, t.Column);
                }
            default:
                throw Error($"expected an expression, got {t}", t);
        }
    }

    Expr ParsePostfix(Expr target)
    {
        while (true)
        {
            var t = Current;
            if (IsOp("."))
            {
                _pos++;
                var name = Current;
                if (name.Kind is not (TokenKind.Name or TokenKind.Integer))
                    throw Error($"expected an attribute name after '.', got {name}", name);
                _pos++;
                target = new AttributeExpr(target, name.Value, name.Line, name.Column);
            }
            else if (IsOp("["))
            {
                _pos++;
                Expr? start = null, stop = null, step = null;
                if (!IsOp(":"))
                    start = ParseExpression();
                if (IsOp(":"))
                {
                    _pos++;
                    if (!IsOp(":") && !IsOp("]"))
                        stop = ParseExpression();
                    if (IsOp(":"))
                    {
                        _pos++;
                        if (!IsOp("]"))
                            step = ParseExpression();
                    }
                    ExpectOp("]");
                    target = new SliceExpr(target, start, stop, step, t.Line, t.Column);
                }
                else
                {
                    ExpectOp("]");
                    target = new IndexExpr(target, start!, t.Line, t.Column);
                }
            }
            else if (IsOp("("))
            {
                var args = new List<Expr>();
                var kwargs = new List<(string, Expr)>();
                ParseArguments(args, kwargs);
                target = new CallExpr(target, args, kwargs, target.Line, target.Column); // errors point at the callee
            }
            else
                return target;
        }
    }

    void ParseArguments(List<Expr> args, List<(string, Expr)> kwargs)
    {
        ExpectOp("(");
        while (!IsOp(")"))
        {
            if (Current.Kind == TokenKind.Name && Peek().Kind == TokenKind.Operator && Peek().Value == "=")
            {
                string name = Next().Value;
                _pos++;
                kwargs.Add((name, ParseExpression()));
            }
            else
            {
                if (kwargs.Count > 0)
                    throw Error("positional argument after a keyword argument", Current);
                args.Add(ParseExpression());
            }
            if (!IsOp(","))
                break;
            _pos++;
        }
        ExpectOp(")");
    }

    // ---- token helpers ----

    Token Next() => _tokens[_pos++];

    bool IsOp(string op) => Current.Kind == TokenKind.Operator && Current.Value == op;

    bool IsName(string name) => Current.Kind == TokenKind.Name && Current.Value == name;

    void Expect(TokenKind kind, string what)
    {
        if (Current.Kind != kind)
            throw Error($"expected '{what}', got {Current}", Current);
        _pos++;
    }

    void ExpectOp(string op)
    {
        if (!IsOp(op))
            throw Error($"expected '{op}', got {Current}", Current);
        _pos++;
    }

    void ExpectKeyword(string name)
    {
        if (!IsName(name))
            throw Error($"expected '{name}', got {Current}", Current);
        _pos++;
    }

    string ExpectName()
    {
        if (Current.Kind != TokenKind.Name)
            throw Error($"expected a name, got {Current}", Current);
        return Next().Value;
    }

    static string Where(Token t) => $"line {t.Line}, column {t.Column}";

    static ChatTemplateException Error(string message, Token at) =>
        new($"chat template: {message} ({Where(at)})");
}
