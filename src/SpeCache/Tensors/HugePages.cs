using System.Runtime.InteropServices;

namespace SpeCache.Tensors;

/// <summary>
/// Anonymous memory in whole 2 MB pages, advised as huge pages on Linux (the kernel's THP "madvise"
/// mode gives them only when asked). Big arrays read in long streams or at random (weights, the
/// host tier's 16-bit cache) then cross no 4 KB page walks, which cost most under a hypervisor's
/// nested paging. Free with <see cref="NativeMemory.AlignedFree"/>.
/// </summary>
internal static unsafe partial class HugePages
{
    public const int Size = 2 << 20;
    const int MadviseHugePage = 14; // MADV_HUGEPAGE

    /// <summary><paramref name="bytes"/> rounded up to whole huge pages.</summary>
    public static long RoundUp(long bytes) => (bytes + Size - 1) / Size * Size;

    /// <summary>A block of <see cref="RoundUp"/>(<paramref name="bytes"/>) bytes, 2 MB-aligned; its pages are committed by the OS on first write.</summary>
    public static void* Allocate(long bytes)
    {
        long whole = RoundUp(bytes);
        void* block = NativeMemory.AlignedAlloc((nuint)whole, Size);
        // Advice only: where the kernel declines, the block still works on normal pages.
        if (OperatingSystem.IsLinux()) _ = Madvise((nint)block, (nuint)whole, MadviseHugePage);
        return block;
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
