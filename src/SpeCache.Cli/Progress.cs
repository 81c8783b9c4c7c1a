using Spectre.Console;

namespace SpeCache.Cli;

/// <summary>Spinners and progress bars for long steps on an interactive terminal; silent when stderr is redirected.</summary>
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
    /// <summary>Runs a step that reports its completed fraction (0 to 1), shown as a bar.</summary>
    public static T RunWithBar<T>(string what, Func<IProgress<double>?, T> step)
    {
        if (!Interactive) return step(null);
        return ErrorConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask(what, maxValue: 1);
                // Spectre's task is thread-safe; reports may come from worker threads.
                var result = step(new Progress<double>(fraction => task.Value = fraction));
                task.Value = 1;
                return result;
            });
    }
}
