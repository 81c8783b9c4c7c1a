using SpeCache.LlamaCpp;
using SpeCache.LlamaCpp.Native;

namespace SpeCache.Tests.LlamaCpp;

public class PeerLibrariesTests
{
    [Fact]
    public void AMissingPeerSaysToRunSetup()
    {
        var empty = TestPaths.Scratch($"no-peer-{Guid.NewGuid():N}");
        try
        {
            var e = Assert.Throws<LlamaCppException>(() => PeerLibraries.FindLibraryDirectory(empty));
            Assert.Contains("run peer/setup.sh", e.Message);
            Assert.Contains("libllama.v0.5.0.so", e.Message);
        }
        finally
        {
            Directory.Delete(empty);
        }
    }

    [Fact]
    public void ThePeerIsFoundNextToTheSolution()
    {
        // Unless redirected: CI and developers may keep the peer elsewhere.
        if (Environment.GetEnvironmentVariable(PeerLibraries.PeerDirVariable) is { Length: > 0 })
            return;
        Assert.Equal(TestPaths.Peer, PeerLibraries.FindPeerDirectory());
        LlamaCppRuntime.EnsureInitialized();
        Assert.Equal(TestPaths.Peer, LlamaCppRuntime.PeerDirectory);
        Assert.True(File.Exists(Path.Combine(LlamaCppRuntime.LibraryDirectory, LlamaCppRuntime.CpuBackend)));
    }
}
