using System.Diagnostics;

namespace SpeCache.Tests.Cli;

public sealed record CliResult(int ExitCode, string StdOut, string StdErr);

/// <summary>Runs the real <c>specache</c> executable (built beside the tests) as a child process.</summary>
public static class CliRunner
{
    /// <summary>The real CLI; the test project builds it in its own configuration.</summary>
    public static string CliDll => BuiltDll(Path.Combine("src", "SpeCache.Cli"), "SpeCache.Cli.dll");

    /// <summary>bench/Bench: <c>specache bench</c> with llama.cpp's rows beside ours, built beside the tests as the CLI is.</summary>
    public static string PeerBenchDll => BuiltDll(Path.Combine("bench", "Bench"), "Bench.dll");

    static string BuiltDll(string project, string file)
    {
        // Found by the configuration the tests themselves were built in.
        string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
        string dll = Path.Combine(TestPaths.RepoRoot, project, "bin", configuration, "net10.0", file);
        return File.Exists(dll) ? dll : throw new FileNotFoundException($"{project} is not built: {dll}");
    }

    /// <summary>Starts <c>specache</c> with redirected streams and leaves it running (for <c>serve</c>); the caller ends it.</summary>
    public static Process Start(params string[] args) => StartDll(CliDll, args);

    /// <summary>Runs bench/Bench to the end, as <see cref="Run"/> runs the CLI.</summary>
    public static CliResult RunPeerBench(params string[] args)
    {
        using var process = StartDll(PeerBenchDll, args);
        return Finish(process, null, args);
    }

    static Process StartDll(string dll, string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        // Keep the default model's extraction inside the test scratch area.
        start.Environment["XDG_CACHE_HOME"] = TestPaths.Scratch("cli-cache");
        start.Environment.Remove("SPECACHE_DEBUG");
        start.Environment.Remove("SPECACHE_API_KEY");
        return Process.Start(start)!;
    }

    public static CliResult RunWithInput(string? stdin, params string[] args)
    {
        using var process = Start(args);
        return Finish(process, stdin, args);
    }

    static CliResult Finish(Process process, string? stdin, string[] args)
    {
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin != null) process.StandardInput.Write(stdin);
        process.StandardInput.Close();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Path.GetFileNameWithoutExtension(process.StartInfo.ArgumentList[0])} {string.Join(' ', args)} did not finish in 2 minutes");
        }
        return new CliResult(process.ExitCode, stdout.Result, stderr.Result);
    }

    public static CliResult Run(params string[] args) => RunWithInput(null, args);

    /// <summary>Asserts the process failed with exactly one line on stderr containing <paramref name="expected"/>.</summary>
    public static void AssertOneLineError(CliResult result, string expected)
    {
        Assert.NotEqual(0, result.ExitCode);
        var lines = result.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line on stderr, got:\n{result.StdErr}");
        Assert.StartsWith("specache: error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("   at ", result.StdErr);
    }
}
