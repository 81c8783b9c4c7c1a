using System.Runtime.CompilerServices;

namespace SpeCache.Tests;

static class PeerSetup
{
    /// <summary>
    /// Tests compare with llama.cpp's portable CPU build (libggml-cpu-x64), whose kernels are ggml's
    /// reference arithmetic. Its AVX2+ builds repack Q4_0/Q8_0/Q4_K weights and round activations
    /// differently (measured: our Q8_0 forward matches the x64 and sse42 builds to 1e-7 and differs
    /// from the haswell/zen4 builds by 5e-3), which on random-weight models flips greedy tokens.
    /// Benchmarks use the fastest build instead. Set SPECACHE_LLAMA_CPU_VARIANT to override.
    /// </summary>
    [ModuleInitializer]
    internal static void UseReferenceKernels()
    {
        if (Environment.GetEnvironmentVariable("SPECACHE_LLAMA_CPU_VARIANT") == null)
            Environment.SetEnvironmentVariable("SPECACHE_LLAMA_CPU_VARIANT", "x64");
    }
}
