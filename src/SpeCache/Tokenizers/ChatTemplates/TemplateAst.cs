namespace SpeCache.Tokenizers.ChatTemplates;

// The syntax tree of a template. Every node keeps the line and column it came from so that a
// runtime error (an unknown method, raise_exception, a bad operand) can say where it happened.

abstract record Node(int Line, int Column)
{
    public string Where => $"line {Line}, column {Column}";
}

// ---- statements ----

sealed record TextNode(string Text, int Line, int Column) : Node(Line, Column);

/// <summary><c>{{ expr }}</c></summary>
sealed record OutputNode(Expr Value, int Line, int Column) : Node(Line, Column);

/// <summary><c>{% if %}</c> with its <c>elif</c> branches; <see cref="Else"/> is empty when absent.</summary>
sealed record IfNode(List<(Expr Condition, List<Node> Body)> Branches, List<Node> Else, int Line, int Column) : Node(Line, Column);

/// <summary><c>{% for a, b in iter if cond %}body{% else %}empty{% endfor %}</c></summary>
sealed record ForNode(List<string> Targets, Expr Iterable, Expr? Filter, List<Node> Body, List<Node> Else, int Line, int Column) : Node(Line, Column);

/// <summary><c>{% set name = v %}</c> or <c>{% set ns.attr = v %}</c> (Attribute non-null).</summary>
sealed record SetNode(string Name, string? Attribute, Expr Value, int Line, int Column) : Node(Line, Column);

/// <summary><c>{% set name %}captured text{% endset %}</c></summary>
sealed record SetBlockNode(string Name, List<Node> Body, int Line, int Column) : Node(Line, Column);

sealed record MacroNode(string Name, List<(string Name, Expr? Default)> Parameters, List<Node> Body, int Line, int Column) : Node(Line, Column);

sealed record BreakNode(int Line, int Column) : Node(Line, Column);

sealed record ContinueNode(int Line, int Column) : Node(Line, Column);

// ---- expressions ----

abstract record Expr(int Line, int Column) : Node(Line, Column);

sealed record LiteralExpr(object? Value, int Line, int Column) : Expr(Line, Column);

sealed record ListExpr(List<Expr> Items, int Line, int Column) : Expr(Line, Column);

sealed record DictExpr(List<(Expr Key, Expr Value)> Items, int Line, int Column) : Expr(Line, Column);

sealed record NameExpr(string Name, int Line, int Column) : Expr(Line, Column);

/// <summary><c>target.name</c></summary>
sealed record AttributeExpr(Expr Target, string Name, int Line, int Column) : Expr(Line, Column);

/// <summary><c>target[index]</c></summary>
sealed record IndexExpr(Expr Target, Expr Index, int Line, int Column) : Expr(Line, Column);

/// <summary><c>target[start:stop:step]</c>, each part optional.</summary>
sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Line, int Column) : Expr(Line, Column);

sealed record CallExpr(Expr Target, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Line, int Column) : Expr(Line, Column);

/// <summary><c>value | name(args)</c></summary>
sealed record FilterExpr(Expr Value, string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Line, int Column) : Expr(Line, Column);

/// <summary><c>value is [not] name(args)</c></summary>
sealed record TestExpr(Expr Value, string Name, List<Expr> Args, bool Negated, int Line, int Column) : Expr(Line, Column);

/// <summary><c>not x</c>, <c>-x</c>, <c>+x</c></summary>
sealed record UnaryExpr(string Op, Expr Operand, int Line, int Column) : Expr(Line, Column);

/// <summary>Arithmetic, <c>~</c>, <c>and</c>, <c>or</c>, and single comparisons (<c>==</c>, <c>in</c>, <c>not in</c>, ...).</summary>
sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Line, int Column) : Expr(Line, Column);

/// <summary><c>then if condition else otherwise</c>; without else the result is undefined when false.</summary>
sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Otherwise, int Line, int Column) : Expr(Line, Column);
