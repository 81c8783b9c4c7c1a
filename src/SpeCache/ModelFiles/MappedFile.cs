using System.IO.MemoryMappedFiles;

namespace SpeCache.ModelFiles;

/// <summary>
/// A read-only memory map of a whole file with a raw pointer to its first byte. Weights are read
/// straight from here (the OS pages them in on demand and shares them between processes), so
/// opening a multi-gigabyte model costs nothing and never copies it.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    bool _disposed;

    public MappedFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"model file not found: {path}", path);
        Path = path;
        Length = new FileInfo(path).Length;
        if (Length == 0) throw new InvalidDataException($"{path}: the file is empty");
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        Pointer = p + _view.PointerOffset;
    }

    public string Path { get; }
    public long Length { get; }
    public byte* Pointer { get; }

    /// <summary>A span over <paramref name="length"/> bytes at <paramref name="offset"/>, bounds-checked against the file.</summary>
    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new InvalidDataException($"{Path}: truncated (needs bytes {offset}..{offset + length}, the file has {Length})");
        return new ReadOnlySpan<byte>(Pointer + offset, length);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
