namespace SpeCache.Tests.Cli;

public class ChatCliTests
{
    [Fact]
    public void TwoTurnsAnswerAndRepeatExactlyWhenGreedy()
    {
        const string turns = "Tell me a story.\nWhat happened next?\n";
        var first = CliRunner.RunWithInput(turns, "chat", "--temperature", "0", "-n", "24");
        var second = CliRunner.RunWithInput(turns, "chat", "--temperature", "0", "-n", "24");
        Assert.Equal(0, first.ExitCode);
        Assert.False(string.IsNullOrWhiteSpace(first.StdOut));
        Assert.Equal(first.StdOut, second.StdOut);
    }

    [Fact]
    public void SecondTurnSeesTheFirst()
    {
        // With a newline stop string every reply is one line. The reply to the same question must
        // differ when a first turn came before it: the conversation (and its KV cache) carries over.
        string[] args = ["chat", "--temperature", "0", "-n", "24", "--stop", "\n"];
        var withHistory = CliRunner.RunWithInput("Tell me a story.\nWhat happened next?\n", args);
        var alone = CliRunner.RunWithInput("What happened next?\n", args);
        Assert.Equal(0, withHistory.ExitCode);
        var replies = withHistory.StdOut.Split('\n');
        Assert.True(replies.Length >= 2, withHistory.StdOut);
        Assert.NotEqual(alone.StdOut.Split('\n')[0], replies[1]);
    }

    [Fact]
    public void UnsupportedTemplateSyntaxIsOneLine()
    {
        string template = Path.Combine(TestPaths.Scratch("cli"), "bad-template.jinja");
        File.WriteAllText(template, "{% for m in messages %}{{ m.content | xmlattr }}{% endfor %}");
        var result = CliRunner.RunWithInput("hello\n", "chat", "--chat-template", template);
        CliRunner.AssertOneLineError(result, "xmlattr");
    }
}
