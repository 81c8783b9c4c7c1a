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
}
