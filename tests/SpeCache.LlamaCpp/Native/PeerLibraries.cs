using System.Runtime.InteropServices;

namespace SpeCache.LlamaCpp.Native;

/// <summary>
/// Finds the prebuilt llama.cpp that peer/setup.sh installs and maps the logical library names of
/// <see cref="LlamaNative"/> to its files. The files carry version suffixes (libllama.v0.5.0.so), so the
/// default probing would never find them, and the folder is not on any loader path.
/// </summary>
internal static class PeerLibraries
{
    /// <summary>Overrides the peer folder (the one holding setup.sh and node_modules/).</summary>
    public const string PeerDirVariable = "SPECACHE_PEER_DIR";

    const string BinsUnderPeer = "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";

    static readonly Dictionary<string, string> FileOf = new()
    {
        [LlamaNative.Llama] = "libllama.v0.5.0.so",
        [LlamaNative.Ggml] = "libggml.v0.5.0.so",
        [LlamaNative.GgmlBase] = "libggml-base.so",
    };

    /// <summary>The peer folder: $SPECACHE_PEER_DIR, else peer/ next to SpeCache.slnx above the running binary.</summary>
    public static string FindPeerDirectory()
    {
        var fromEnvironment = Environment.GetEnvironmentVariable(PeerDirVariable);
        if (!string.IsNullOrEmpty(fromEnvironment))
            return Path.GetFullPath(fromEnvironment);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SpeCache.slnx")))
                return Path.Combine(dir.FullName, "peer");
        throw new LlamaCppException(
            $"cannot find the llama.cpp peer: no SpeCache.slnx above {AppContext.BaseDirectory} and {PeerDirVariable} is not set");
    }

    /// <summary>The folder with libllama, libggml and the libggml-cpu-*.so variants; throws telling how to install it.</summary>
    public static string FindLibraryDirectory(string peerDirectory)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            throw new PlatformNotSupportedException("the llama.cpp peer is installed for linux-x64 only");
        var dir = Path.Combine(peerDirectory, BinsUnderPeer);
        var missing = FileOf.Values.Where(f => !File.Exists(Path.Combine(dir, f))).ToList();
        if (missing.Count > 0)
            throw new LlamaCppException(
                $"the llama.cpp peer is not installed ({string.Join(", ", missing)} missing in {dir}): run peer/setup.sh");
        return dir;
    }

    /// <summary>Makes [LibraryImport]s of this assembly load from <paramref name="libraryDirectory"/>.</summary>
    public static void InstallResolver(string libraryDirectory)
    {
        NativeLibrary.SetDllImportResolver(typeof(LlamaNative).Assembly, (name, _, _) =>
            FileOf.TryGetValue(name, out var file) ? NativeLibrary.Load(Path.Combine(libraryDirectory, file)) : 0);
    }

    /// <summary>Which libggml-cpu-*.so is mapped into the process (the loser variants are unloaded after scoring).</summary>
    public static string? LoadedCpuVariant()
    {
        try
        {
            return File.ReadLines("/proc/self/maps")
                .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "")
                .Select(Path.GetFileName)
                .FirstOrDefault(name => name != null && name.StartsWith("libggml-cpu-", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return null;
        }
    }
}
