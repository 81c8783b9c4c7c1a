using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace SpeCache.ModelFiles.Gguf;

/// <summary>
/// Reads little-endian GGUF fields from mapped memory, checking every read against the end of the
/// file so that a corrupt length or count becomes a one-line error instead of a wild read or a huge
/// allocation. <see cref="Context"/> names what is being read, for those errors.
/// </summary>
internal sealed unsafe class GgufCursor(byte* start, long length, string fileName)
{
    public long Position { get; private set; }
    public long Length => length;
    public long Remaining => length - Position;

    /// <summary>What is being read, e.g. "metadata entry 3 ('general.name')"; part of every error.</summary>
    public string Context { get; set; } = "header";

    public InvalidDataException Error(string message) =>
        new($"GGUF '{fileName}', {Context}, at byte {Position}: {message}");

    void Need(long bytes)
    {
        if (bytes > Remaining)
            throw Error($"file is truncated (needs {bytes} bytes, {Remaining} left)");
    }

    public T Read<T>() where T : unmanaged
    {
        Need(sizeof(T));
        var value = Unsafe.ReadUnaligned<T>(start + Position);
        Position += sizeof(T);
        return value;
    }

    public string ReadString()
    {
        ulong byteCount = Read<ulong>();
        if (byteCount > (ulong)Remaining)
            throw Error($"string length {byteCount} runs past the end of the file ({Remaining} bytes left)");
        if (byteCount > int.MaxValue)
            throw Error($"string length {byteCount} is larger than 2 GiB");
        var text = Encoding.UTF8.GetString(start + Position, (int)byteCount);
        Position += (long)byteCount;
        return text;
    }

    /// <summary>Copies <paramref name="count"/> fixed-size values; the caller has checked count against the file size.</summary>
    public T[] ReadArray<T>(long count) where T : unmanaged
    {
        long bytes = count * sizeof(T);
        Need(bytes);
        if (bytes > int.MaxValue)
            throw Error($"array of {count} values is larger than 2 GiB");
        var values = new T[count];
        new ReadOnlySpan<byte>(start + Position, checked((int)bytes)).CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        Position += bytes;
        return values;
    }
}
