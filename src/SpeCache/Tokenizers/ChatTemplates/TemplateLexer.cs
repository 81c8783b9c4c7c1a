using System.Globalization;
using System.Text;

namespace SpeCache.Tokenizers.ChatTemplates;

enum TokenKind
{
    Text,        // literal template text between tags
    VarBegin,    // {{
    VarEnd,      // }}
    BlockBegin,  // {%
    BlockEnd,    // %}
    Name,
    String,
    Integer,
    Float,
    Operator,    // punctuation: + - * / // % ~ == != < > <= >= = . , : | ( ) [ ] { }
    End,
}

readonly record struct Token(TokenKind Kind, string Value, int Line, int Column)
{
    public override string ToString() => Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.Text => "text",
        TokenKind.String => $"string '{Value}'",
        _ => $"'{Value}'",
    };
}

/// <summary>
/// Splits a template into text and tag tokens, applying Jinja's whitespace rules the way Hugging Face
/// renders chat templates: <c>trim_blocks=True</c> (the first newline after a block or comment tag is
/// dropped), <c>lstrip_blocks=True</c> (spaces and tabs before a block or comment tag at the start of a
/// line are dropped), <c>-</c> inside a tag strips all whitespace on that side, <c>+</c> opts out, and
/// one trailing newline of the template is dropped (Jinja's <c>keep_trailing_newline=False</c>).
/// </summary>
sealed class TemplateLexer
{
    readonly string _src;
    readonly List<int> _lineStarts = [0]; // offsets where each line begins, for line/column in errors
    readonly List<Token> _tokens = [];
    int _pos;

    TemplateLexer(string source)
    {
        // Jinja normalises newlines; a CRLF template renders with LF.
        _src = source.Replace("\r\n", "\n");
        if (_src.EndsWith('\n'))
            _src = _src[..^1];
        for (int i = 0; i < _src.Length; i++)
            if (_src[i] == '\n')
                _lineStarts.Add(i + 1);
    }

    public static List<Token> Tokenize(string source)
    {
        var lexer = new TemplateLexer(source);
        lexer.Run();
        return lexer._tokens;
    }

    void Run()
    {
        bool lineStarting = true; // the previous tag consumed a newline, or we are at the start
        while (_pos < _src.Length)
        {
            int tagStart = FindTagStart(_pos);
            string text = _src[_pos..(tagStart < 0 ? _src.Length : tagStart)];
            int textPos = _pos;
            if (tagStart < 0)
            {
                Emit(TokenKind.Text, text, textPos);
                break;
            }

            char kind = _src[tagStart + 1]; // '{', '%' or '#'
            char sign = tagStart + 2 < _src.Length ? _src[tagStart + 2] : '\0';
            if (sign == '-')
                text = text.TrimEnd();
            else if (sign != '+' && kind != '{')
                text = LstripBlock(text, lineStarting);
            Emit(TokenKind.Text, text, textPos);

            _pos = tagStart + 2 + (sign is '-' or '+' ? 1 : 0);
            bool rightStrip;
            bool keepNewline;
            if (kind == '#')
            {
                int close = _src.IndexOf("#}", _pos, StringComparison.Ordinal);
                if (close < 0)
                    throw Error("comment is not closed with '#}'", tagStart);
                rightStrip = close > _pos && _src[close - 1] == '-';
                keepNewline = close > _pos && _src[close - 1] == '+';
                _pos = close + 2;
            }
            else
            {
                var (begin, end) = kind == '{' ? (TokenKind.VarBegin, TokenKind.VarEnd) : (TokenKind.BlockBegin, TokenKind.BlockEnd);
                _tokens.Add(Tok(begin, kind == '{' ? "{{" : "{%", tagStart));
                (rightStrip, keepNewline) = LexExpression(kind == '{' ? '}' : '%', tagStart);
                _tokens.Add(Tok(end, kind == '{' ? "}}" : "%}", _pos - 2));
            }

            int after = _pos;
            if (rightStrip)
                while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos]))
                    _pos++;
            else if (kind != '{' && !keepNewline && _pos < _src.Length && _src[_pos] == '\n')
                _pos++; // trim_blocks
            lineStarting = _pos > after && _src[_pos - 1] == '\n';
        }
        _tokens.Add(Tok(TokenKind.End, "", _src.Length));
    }

    int FindTagStart(int from)
    {
        for (int i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
            if (_src[i + 1] is '{' or '%' or '#')
                return i;
        return -1;
    }

    /// <summary>lstrip_blocks: drop the spaces before a block tag when only whitespace precedes it on its line.</summary>
    static string LstripBlock(string text, bool lineStarting)
    {
        int lineStart = text.LastIndexOf('\n') + 1;
        if (lineStart == 0 && !lineStarting)
            return text;
        for (int i = lineStart; i < text.Length; i++)
            if (!char.IsWhiteSpace(text[i]))
                return text;
        return text[..lineStart];
    }

    /// <summary>Lexes the inside of a {{ }} or {% %} tag; returns whether it closes with '-' or '+'.</summary>
    (bool RightStrip, bool KeepNewline) LexExpression(char closer, int tagStart)
    {
        int depth = 0; // brackets open: a '}}' inside a dict literal does not close the tag
        while (true)
        {
            while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos]))
                _pos++;
            if (_pos >= _src.Length)
                throw Error($"tag is not closed with '{closer}}}'", tagStart);

            if (depth == 0)
            {
                foreach (var prefix in new[] { "-", "+", "" })
                {
                    string close = prefix + closer + "}";
                    if (string.CompareOrdinal(_src, _pos, close, 0, close.Length) == 0)
                    {
                        _pos += close.Length;
                        return (prefix == "-", prefix == "+");
                    }
                }
            }

            char c = _src[_pos];
            int start = _pos;
            if (char.IsLetter(c) || c == '_')
            {
                while (_pos < _src.Length && (char.IsLetterOrDigit(_src[_pos]) || _src[_pos] == '_'))
                    _pos++;
                _tokens.Add(Tok(TokenKind.Name, _src[start.._pos], start));
            }
            else if (char.IsAsciiDigit(c))
                LexNumber();
            else if (c is '\'' or '"')
                LexString(c);
            else
            {
                string two = _pos + 1 < _src.Length ? _src.Substring(_pos, 2) : "";
                string op = two is "//" or "==" or "!=" or "<=" or ">=" or "**" ? two : c.ToString();
                if (op.Length == 1 && "+-*/%~<>=.,:|()[]{}".IndexOf(c) < 0)
                    throw Error($"unexpected character '{c}'", _pos);
                if (c is '(' or '[' or '{')
                    depth++;
                else if (c is ')' or ']' or '}')
                    depth = Math.Max(0, depth - 1);
                _pos += op.Length;
                _tokens.Add(Tok(TokenKind.Operator, op, start));
            }
        }
    }

    void LexNumber()
    {
        int start = _pos;
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_'))
            _pos++;
        bool isFloat = false;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            while (_pos < _src.Length && char.IsAsciiDigit(_src[_pos]))
                _pos++;
        }
        if (_pos < _src.Length && _src[_pos] is 'e' or 'E')
        {
            int save = _pos++;
            if (_pos < _src.Length && _src[_pos] is '+' or '-')
                _pos++;
            if (_pos < _src.Length && char.IsAsciiDigit(_src[_pos]))
            {
                isFloat = true;
                while (_pos < _src.Length && char.IsAsciiDigit(_src[_pos]))
                    _pos++;
            }
            else
                _pos = save;
        }
        string text = _src[start.._pos].Replace("_", "");
        _tokens.Add(Tok(isFloat ? TokenKind.Float : TokenKind.Integer, text, start));
    }

    void LexString(char quote)
    {
        int start = _pos++;
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= _src.Length)
                throw Error("string is not closed", start);
            char c = _src[_pos++];
            if (c == quote)
                break;
            if (c != '\\' || _pos >= _src.Length)
            {
                sb.Append(c);
                continue;
            }
            char e = _src[_pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case '0': sb.Append('\0'); break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case '\n': break; // backslash-newline continues the line, as in Python
                case 'u' or 'x' or 'U':
                    int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    if (_pos + digits > _src.Length || !int.TryParse(_src.AsSpan(_pos, digits), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code))
                        throw Error($"bad \\{e} escape in string", _pos - 2);
                    sb.Append(char.ConvertFromUtf32(code));
                    _pos += digits;
                    break;
                default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes as written
            }
        }
        _tokens.Add(Tok(TokenKind.String, sb.ToString(), start));
    }

    void Emit(TokenKind kind, string value, int pos)
    {
        if (value.Length > 0)
            _tokens.Add(Tok(kind, value, pos));
    }

    Token Tok(TokenKind kind, string value, int pos)
    {
        var (line, column) = LineColumn(pos);
        return new Token(kind, value, line, column);
    }

    ChatTemplateException Error(string message, int pos)
    {
        var (line, column) = LineColumn(pos);
        return new ChatTemplateException($"chat template: {message} (line {line}, column {column})");
    }

    /// <summary>1-based line and column of a character offset.</summary>
    (int Line, int Column) LineColumn(int pos)
    {
        int index = _lineStarts.BinarySearch(pos);
        int line = index >= 0 ? index : ~index - 1;
        return (line + 1, pos - _lineStarts[line] + 1);
    }
}
