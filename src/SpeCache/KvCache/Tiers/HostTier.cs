using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using SpeCache.Tensors;

namespace SpeCache.KvCache.Tiers;

/// <summary>
/// The big, slow tier: one flat byte arena holding the full 16-bit keys and values of a sequence,
/// either in RAM or in a memory-mapped file on disk (so a context larger than RAM still works: the
/// OS pages the file in and out). Both are reached through one pointer so the cache code is the same.
/// </summary>
/// <remarks>
/// A disk arena is a fresh file for every cache. Given a directory, the file gets a unique name and
/// is unlinked as soon as it is mapped, so a killed process leaves nothing behind; given a file path,
/// the file is truncated and rewritten, so a leftover from a killed run is simply overwritten. The
/// contents never outlive the process that wrote them, so no restart reads a half-written arena.
/// </remarks>
public sealed unsafe class HostTier : IDisposable
{
    readonly MemoryMappedFile? _map;
    readonly MemoryMappedViewAccessor? _view;
    byte* _base;

    HostTier(long bytes, byte* pointer, MemoryMappedFile? map, MemoryMappedViewAccessor? view, string? path)
    {
        Bytes = bytes;
        _base = pointer;
        _map = map;
        _view = view;
        FilePath = path;
    }

    /// <summary>Bytes in the arena.</summary>
    public long Bytes { get; }

    /// <summary>The backing file of a disk arena while it is visible in the file system (null in RAM, or once unlinked).</summary>
    public string? FilePath { get; }

    public bool OnDisk => _map != null;

    /// <summary>
    /// An arena in RAM, on huge pages: a decode step reads its top-k pairs at random positions, and
    /// on 4 KB pages each read was a page walk (perf: the copies of 64 pairs per head at 9 % of a
    /// 32K-token decode step, more than the low-bit key scores). Pages are committed by the OS on
    /// first write, 2 MB at a time, so an unused context costs little.
    /// </summary>
    public static HostTier InRam(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        byte* pointer = (byte*)HugePages.Allocate(bytes);
        return new HostTier(bytes, pointer, null, null, null);
    }

    /// <summary>An arena in a memory-mapped file: <paramref name="path"/> is a directory (a private, unlinked file in it) or a file path (truncated).</summary>
    public static HostTier OnDiskAt(string path, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        bool directory = Directory.Exists(path);
        string file = directory ? Path.Combine(path, $"specache-host-{Environment.ProcessId}-{Guid.NewGuid():N}.kv") : path;
        string? parent = Path.GetDirectoryName(Path.GetFullPath(file));
        if (parent != null && !Directory.Exists(parent))
            throw new DirectoryNotFoundException($"host tier folder '{parent}' does not exist");
        var stream = new FileStream(file, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1, directory ? FileOptions.DeleteOnClose : FileOptions.None);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            stream.SetLength(bytes); // sparse: blocks are allocated as tokens are written
            map = MemoryMappedFile.CreateFromFile(stream, null, bytes, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, bytes, MemoryMappedFileAccess.ReadWrite);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointer += view.PointerOffset;
            if (directory && !OperatingSystem.IsWindows())
            {
                // The mapping keeps the data alive; without a name nothing can be left behind by a kill.
                try { File.Delete(file); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
            return new HostTier(bytes, pointer, map, view, directory && !OperatingSystem.IsWindows() ? null : file);
        }
        catch
        {
            view?.Dispose();
            if (map != null) map.Dispose(); else stream.Dispose();
            throw;
        }
    }

    /// <summary>The arena's bytes from <paramref name="offset"/>.</summary>
    public Span<byte> Slice(long offset, int length)
    {
        if (_base == null) throw new ObjectDisposedException(nameof(HostTier));
        if ((ulong)offset > (ulong)(Bytes - length) || length < 0)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{offset} + {length} is outside the host tier of {Bytes} bytes");
        return new Span<byte>(_base + offset, length);
    }

    /// <summary>
    /// Asks for the cache lines of [offset, offset + length) ahead of a read, so that reads at many
    /// random places overlap their memory latency instead of taking it one after another. A hint:
    /// it never faults a page in.
    /// </summary>
    public void Prefetch(long offset, int length)
    {
        if (_base == null || !Sse.IsSupported || (ulong)offset > (ulong)(Bytes - length) || length < 0) return;
        for (int i = 0; i < length; i += 64) Sse.Prefetch0(_base + offset + i);
    }

    public void Dispose()
    {
        if (_base == null) return;
        if (_view != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _map!.Dispose();
        }
        else
        {
            NativeMemory.AlignedFree(_base);
        }
        _base = null;
    }
}
