using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using SpeCache.LlamaCpp.Native;

namespace SpeCache.LlamaCpp;

/// <summary>
/// Loads llama.cpp once per process: resolves the peer's libraries, silences its log into a buffer,
/// registers the best CPU backend, then initialises llama.
/// </summary>
/// <remarks>
/// This release is built with dynamically loaded backends (GGML_BACKEND_DL): libggml has no compute
/// backend of its own, and the CPU kernels live in one libggml-cpu-&lt;microarchitecture&gt;.so per
/// instruction-set level. llama_backend_init falls back to ggml_backend_load_all(), which searches only
/// the executable's folder (the dotnet host's) and the working directory, so it finds nothing and model
/// loading then fails with "no backends are loaded". We call ggml_backend_load_all_from_path(peer bins)
/// first: it dlopens every libggml-cpu-*.so there, asks each for ggml_backend_score() (0 when the CPU
/// lacks its instructions), keeps the highest and unloads the rest. Setting
/// SPECACHE_LLAMA_CPU_VARIANT=haswell (for example) loads that one variant instead, via ggml_backend_load.
/// </remarks>
public static unsafe class LlamaCppRuntime
{
    /// <summary>Forces one CPU variant (libggml-cpu-&lt;value&gt;.so), e.g. to compare at the same ISA level.</summary>
    public const string CpuVariantVariable = "SPECACHE_LLAMA_CPU_VARIANT";

    /// <summary>When set to 1, llama.cpp's log also goes to stderr.</summary>
    public const string EchoLogVariable = "SPECACHE_LLAMA_LOG";

    const int LogCapacity = 16 * 1024;

    static readonly Lock Gate = new();
    static readonly StringBuilder Log = new();
    static long logTotal; // characters ever logged, so marks survive trimming
    static bool echoLog;
    static bool initialized;

    /// <summary>The peer folder (holding setup.sh).</summary>
    public static string PeerDirectory { get; private set; } = "";

    /// <summary>The folder the native libraries were loaded from.</summary>
    public static string LibraryDirectory { get; private set; } = "";

    /// <summary>The libggml-cpu-*.so in use, e.g. "libggml-cpu-zen4.so".</summary>
    public static string CpuBackend { get; private set; } = "";

    /// <summary>ggml devices after loading, as "name: description".</summary>
    public static IReadOnlyList<string> Devices { get; private set; } = [];

    /// <summary>llama.cpp's own summary of the CPU features it was built for and found.</summary>
    public static string SystemInfo
    {
        get
        {
            EnsureInitialized();
            return Utf8(LlamaNative.llama_print_system_info());
        }
    }

    /// <summary>Loads and initialises llama.cpp if this process has not yet; throws when the peer is missing.</summary>
    public static void EnsureInitialized()
    {
        lock (Gate)
        {
            if (initialized)
                return;
            var peer = PeerLibraries.FindPeerDirectory();
            var libraries = PeerLibraries.FindLibraryDirectory(peer);
            echoLog = Environment.GetEnvironmentVariable(EchoLogVariable) == "1";
            PeerLibraries.InstallResolver(libraries);

            // Before anything else, so that backend loading and model loading do not print to stderr.
            LlamaNative.llama_log_set(&OnLog, null);
            LoadCpuBackend(libraries);
            LlamaNative.llama_backend_init();

            PeerDirectory = peer;
            LibraryDirectory = libraries;
            CpuBackend = PeerLibraries.LoadedCpuVariant() ?? "(unknown)";
            Devices = ListDevices();
            initialized = true;
        }
    }

    /// <summary>The tail of what llama.cpp logged (last ~16 KB), for error messages and diagnostics.</summary>
    public static string RecentLog() => LogSince(0);

    /// <summary>A mark in the log: pass it to <see cref="LogSince"/> to get what one operation logged.</summary>
    public static long LogPosition => Volatile.Read(ref logTotal); // no lock: it is read on every decode step

    /// <summary>What was logged after <paramref name="mark"/> and is still held.</summary>
    public static string LogSince(long mark)
    {
        lock (Log)
        {
            var held = logTotal - Log.Length;
            var from = (int)Math.Clamp(mark - held, 0, Log.Length);
            return Log.ToString(from, Log.Length - from);
        }
    }

    /// <summary>An exception for a failed call, with what llama.cpp logged since <paramref name="mark"/> (its reason, usually).</summary>
    internal static LlamaCppException Failure(string what, long mark)
    {
        var log = LogSince(mark).Trim();
        if (log.Length > 2000)
            log = "..." + log[^2000..];
        return new LlamaCppException(log.Length == 0 ? $"{what} (llama.cpp logged nothing)" : $"{what}\n--- llama.cpp log ---\n{log}");
    }

    static void LoadCpuBackend(string libraries)
    {
        var mark = LogPosition;
        var variant = Environment.GetEnvironmentVariable(CpuVariantVariable);
        if (string.IsNullOrEmpty(variant))
        {
            LlamaNative.ggml_backend_load_all_from_path(libraries);
        }
        else
        {
            var path = Path.Combine(libraries, $"libggml-cpu-{variant}.so");
            if (!File.Exists(path) || LlamaNative.ggml_backend_load(path) == 0)
                throw Failure($"cannot load the CPU backend {path} ({CpuVariantVariable}={variant})", mark);
        }
        if (LlamaNative.ggml_backend_dev_count() == 0)
            throw Failure($"no ggml backend could be loaded from {libraries}", mark);
    }

    static List<string> ListDevices()
    {
        var devices = new List<string>();
        for (nuint i = 0; i < LlamaNative.ggml_backend_dev_count(); i++)
        {
            var dev = LlamaNative.ggml_backend_dev_get(i);
            devices.Add($"{Utf8(LlamaNative.ggml_backend_dev_name(dev))}: {Utf8(LlamaNative.ggml_backend_dev_description(dev))}");
        }
        return devices;
    }

    internal static string Utf8(byte* text) => text == null ? "" : Marshal.PtrToStringUTF8((nint)text) ?? "";

    // ggml_log_callback: void (*)(enum ggml_log_level level, const char * text, void * user_data).
    // Called from llama.cpp's threads; an exception escaping here would abort the process.
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void OnLog(int level, byte* text, void* userData)
    {
        try
        {
            var message = Utf8(text);
            lock (Log)
            {
                Log.Append(message);
                logTotal += message.Length;
                if (Log.Length > LogCapacity)
                    Log.Remove(0, Log.Length - LogCapacity / 2);
            }
            if (echoLog)
                Console.Error.Write(message);
        }
        catch
        {
            // Losing a log line is better than tearing down the process from a native thread.
        }
    }
}
