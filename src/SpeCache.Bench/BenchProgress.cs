using Spectre.Console;

namespace SpeCache.Bench;

/// <summary>
/// The bench's terminal output on stderr: a status line or bar on an interactive terminal, nothing when
/// redirected; failures as one line, as every specache command reports them (SPECACHE_DEBUG=1: the stack).
/// </summary>
static class BenchProgress
{
    static readonly IAnsiConsole ErrorConsole = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    static bool Interactive => !Console.IsErrorRedirected && ErrorConsole.Profile.Capabilities.Interactive;

    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("SPECACHE_DEBUG") != "1")
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"specache: error: {e.Message.ReplaceLineEndings(" ")}");
            return 1;
        }
    }

    public static T Status<T>(string what, Func<Action<string>, T> step)
    {
        if (!Interactive) return step(_ => { });
        return ErrorConsole.Status().Spinner(Spinner.Known.Dots).Start(Markup.Escape(what), context => step(s => context.Status(Markup.Escape(s))));
    }

    public static T Bar<T>(string what, Func<IProgress<double>?, T> step)
    {
        if (!Interactive) return step(null);
        return ErrorConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask(Markup.Escape(what), maxValue: 1);
                var result = step(new Progress<double>(fraction => task.Value = fraction));
                task.Value = 1;
                return result;
            });
    }
}
