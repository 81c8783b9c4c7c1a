namespace SpeCache.Tests;

/// <summary>Where the repository's vendored models and the llama.cpp peer are, found from the test binary.</summary>
public static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Models => Path.Combine(RepoRoot, "models");
    public static string Stories260K => Path.Combine(Models, "stories260k", "stories260K.bin");
    public static string Stories260KTokenizer => Path.Combine(Models, "stories260k", "tok512.bin");
    public static string TinyStories656K => Path.Combine(Models, "tinystories-656k");
    public static string Llama2TinyRandom => Path.Combine(Models, "llama-2-tiny-random", "llama-2-tiny-random.gguf");

    /// <summary>peer/: llama.cpp's libllama and source, installed by peer/setup.sh (which .ci/run calls).</summary>
    public static string Peer => Path.Combine(RepoRoot, "peer");
    public static string LlamaCppSource => Path.Combine(Peer, "llama.cpp");

    /// <summary>A scratch folder for files a test writes (converted models, corrupt copies).</summary>
    public static string Scratch(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), "specache-tests", name);
        Directory.CreateDirectory(dir);
        return dir;
    }

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SpeCache.slnx")))
                return dir.FullName;
        throw new InvalidOperationException("cannot find the repository root (SpeCache.slnx) above the test binary");
    }
}
