using System.Text;

namespace SpeCache.Generation;

/// <summary>
/// Finds stop strings in streamed text. Text arrives piece by piece (a token's text at a time) and
/// a stop string may be split across pieces, so text that could still be the start of a stop string
/// is held back; everything else is released at once. When a stop string completes, the text before
/// it is released and the stop string and anything after it are not.
/// <para>
/// A match is reported as soon as a stop string is complete: if a longer stop string could still be
/// completing at an earlier position, we do not wait for it (waiting would mean generating past a
/// stop). Among stop strings complete in the same piece, the one that starts first wins.
/// </para>
/// </summary>
public sealed class StopStringMatcher
{
    readonly string[] _stops;
    readonly StringBuilder _held = new();

    public StopStringMatcher(IEnumerable<string> stopStrings)
    {
        ArgumentNullException.ThrowIfNull(stopStrings);
        _stops = stopStrings.Where(s => !string.IsNullOrEmpty(s)).Distinct(StringComparer.Ordinal).ToArray();
    }

    /// <summary>Whether a stop string has been seen; after that, <see cref="Push"/> releases nothing.</summary>
    public bool Stopped { get; private set; }

    /// <summary>The stop string that ended the text, once <see cref="Stopped"/>.</summary>
    public string? MatchedStop { get; private set; }

    /// <summary>
    /// Adds a piece of text and returns the text that can now be shown. Check <see cref="Stopped"/>
    /// afterwards to know whether generation should end.
    /// </summary>
    public string Push(string piece)
    {
        ArgumentNullException.ThrowIfNull(piece);
        if (Stopped)
            return "";
        _held.Append(piece);
        string text = _held.ToString();

        int matchAt = -1;
        foreach (var stop in _stops)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (matchAt < 0 || at < matchAt))
            {
                matchAt = at;
                MatchedStop = stop;
            }
        }
        if (matchAt >= 0)
        {
            Stopped = true;
            _held.Clear();
            return text[..matchAt];
        }

        int keep = LongestPartialStop(text);
        _held.Clear().Append(text, text.Length - keep, keep);
        return text[..^keep];
    }

    /// <summary>At the end of generation: releases whatever was held back (no stop string completed).</summary>
    public string Flush()
    {
        string rest = Stopped ? "" : _held.ToString();
        _held.Clear();
        return rest;
    }

    /// <summary>Length of the longest suffix of <paramref name="text"/> that is a proper prefix of some stop string.</summary>
    int LongestPartialStop(string text)
    {
        int best = 0;
        foreach (var stop in _stops)
        {
            for (int len = Math.Min(stop.Length - 1, text.Length); len > best; len--)
            {
                if (string.CompareOrdinal(text, text.Length - len, stop, 0, len) == 0)
                {
                    best = len;
                    break;
                }
            }
        }
        return best;
    }
}
