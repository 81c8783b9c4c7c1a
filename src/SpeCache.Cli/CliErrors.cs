namespace SpeCache.Cli;

/// <summary>
/// Every command runs inside this: a failure becomes one line on stderr and exit code 1, never a
/// stack trace (set SPECACHE_DEBUG=1 to see one).
/// </summary>
static class CliErrors
{
    public const int Failure = 1;

    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("SPECACHE_DEBUG") != "1")
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"specache: error: {OneLine(e)}");
            return Failure;
        }
    }

    static string OneLine(Exception e)
    {
        var inner = e is AggregateException { InnerExceptions.Count: 1 } agg ? agg.InnerExceptions[0] : e;
        string message = inner is OperationCanceledException ? "cancelled" : inner.Message;
        return message.ReplaceLineEndings(" ");
    }
}
