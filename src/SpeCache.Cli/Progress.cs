using Spectre.Console;

namespace SpeCache.Cli;

/// <summary>Spinners for long steps on an interactive terminal; silent when stderr is redirected.</summary>
static class Progress
{
    static readonly IAnsiConsole ErrorConsole = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    public static bool Interactive => !Console.IsErrorRedirected && ErrorConsole.Profile.Capabilities.Interactive;

    public static T Run<T>(string what, Func<T> step)
    {
        if (!Interactive) return step();
        return ErrorConsole.Status().Spinner(Spinner.Known.Dots).Start(what, _ => step());
    }

    /// <summary>
    /// A progress bar per named phase: <paramref name="body"/> reports (phase, done, total) as it goes.
    /// Without a terminal the reports are dropped.
    /// </summary>
    public static T Bars<T>(Func<Action<string, int, int>, T> body)
    {
        if (!Interactive) return body((_, _, _) => { });
        return ErrorConsole.Progress().AutoClear(false).Columns(
            new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                return body((phase, done, total) =>
                {
                    if (!tasks.TryGetValue(phase, out var task))
                    {
                        foreach (var other in tasks.Values) other.Value = other.MaxValue;
                        tasks[phase] = task = context.AddTask(Markup.Escape(phase), maxValue: total);
                    }
                    task.Value = done + 1;
                });
            });
    }
}
