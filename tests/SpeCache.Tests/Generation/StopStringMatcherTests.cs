using SpeCache.Generation;

namespace SpeCache.Tests.Generation;

public class StopStringMatcherTests
{
    /// <summary>Feeds pieces and returns what was released piece by piece, plus the final flush.</summary>
    static (List<string> Released, StopStringMatcher Matcher) Feed(string[] stops, params string[] pieces)
    {
        var matcher = new StopStringMatcher(stops);
        var released = pieces.Select(matcher.Push).ToList();
        released.Add(matcher.Flush());
        return (released, matcher);
    }

    [Fact]
    public void TextWithoutStopsPassesStraightThrough()
    {
        var (released, m) = Feed(["</s>"], "Hello", " world");
        Assert.Equal(["Hello", " world", ""], released);
        Assert.False(m.Stopped);
    }

    [Fact]
    public void StopStringSplitAcrossPieces()
    {
        var (released, m) = Feed(["<|im_end|>"], "Hi there<|im", "_en", "d|>ignored");
        Assert.Equal(["Hi there", "", "", ""], released);
        Assert.True(m.Stopped);
        Assert.Equal("<|im_end|>", m.MatchedStop);
    }

    [Fact]
    public void HeldTextIsReleasedWhenItStopsLookingLikeAStop()
    {
        var (released, m) = Feed(["<|im_end|>"], "a <|i", "s not it");
        Assert.Equal(["a ", "<|is not it", ""], released);
        Assert.False(m.Stopped);
    }

    [Fact]
    public void HeldTextIsReleasedByFlush()
    {
        var (released, _) = Feed(["STOP"], "the end ST");
        Assert.Equal(["the end ", "ST"], released);
    }

    [Fact]
    public void OverlappingPrefixesOfOneStop()
    {
        // "aab": after "aa" comes "a", so one 'a' is released and "aa" is still a possible start.
        var (released, m) = Feed(["aab"], "x", "a", "a", "a", "b", "tail");
        Assert.Equal(["x", "", "", "a", "", "", ""], released);
        Assert.True(m.Stopped);
    }

    [Fact]
    public void OverlappingStopStrings()
    {
        // "abc" and "bcd" share "bc"; "xab" holds "ab", and "c" completes "abc" first.
        var (released, m) = Feed(["bcd", "abc"], "xab", "c", "d");
        Assert.Equal(["x", "", "", ""], released);
        Assert.Equal("abc", m.MatchedStop);
    }

    [Fact]
    public void EarliestOfSeveralCompleteStopsWins()
    {
        var (released, m) = Feed(["END", "###"], "one ### two END");
        Assert.Equal(["one ", ""], released);
        Assert.Equal("###", m.MatchedStop);
    }

    [Fact]
    public void StopAtTheVeryStart()
    {
        var (released, m) = Feed(["User:"], "User:", "more");
        Assert.Equal(["", "", ""], released);
        Assert.True(m.Stopped);
    }

    [Fact]
    public void NoStopStringsReleaseEverything()
    {
        var (released, _) = Feed([], "a", "b");
        Assert.Equal(["a", "b", ""], released);
    }

    [Fact]
    public void ConcatenationEqualsTextBeforeFirstStop()
    {
        // Whatever the piece boundaries, the released text is the text before the first stop string.
        const string text = "The answer is 42.\nUser: next question";
        for (int size = 1; size <= 6; size++)
        {
            var pieces = Enumerable.Range(0, (text.Length + size - 1) / size)
                .Select(i => text.Substring(i * size, Math.Min(size, text.Length - i * size))).ToArray();
            var (released, m) = Feed(["\nUser:", "</s>"], pieces);
            Assert.Equal("The answer is 42.", string.Concat(released));
            Assert.True(m.Stopped);
        }
    }
}
