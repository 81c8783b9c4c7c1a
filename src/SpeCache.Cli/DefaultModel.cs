using System.Reflection;

namespace SpeCache.Cli;

/// <summary>
/// The model used when --model is not given: stories260K (a 260K-parameter llama2.c model trained on
/// TinyStories, MIT), embedded in this executable so that the first command needs no download.
/// It is written once to the user's cache folder and memory-mapped from there like any model.
/// </summary>
static class DefaultModel
{
    public const string Name = "stories260K";

    public static string Path()
    {
        string dir = System.IO.Path.Combine(CacheRoot(), "models", "stories260k");
        Directory.CreateDirectory(dir);
        string model = Extract(dir, "stories260K.bin");
        Extract(dir, "tok512.bin");
        return model;
    }

    static string CacheRoot()
    {
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string root = !string.IsNullOrEmpty(xdg) ? xdg : System.IO.Path.Combine(string.IsNullOrEmpty(home) ? System.IO.Path.GetTempPath() : home, ".cache");
        return System.IO.Path.Combine(root, "specache");
    }

    static string Extract(string dir, string name)
    {
        string target = System.IO.Path.Combine(dir, name);
        using var resource = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"embedded model file {name} is missing from this build");
        if (File.Exists(target) && new FileInfo(target).Length == resource.Length) return target;
        // Write beside and rename, so a killed process never leaves a half-written model behind.
        string temp = $"{target}.{Environment.ProcessId}.tmp";
        using (var output = File.Create(temp)) resource.CopyTo(output);
        File.Move(temp, target, overwrite: true);
        return target;
    }
}
