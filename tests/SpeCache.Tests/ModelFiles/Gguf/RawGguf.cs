using System.Text;

namespace SpeCache.Tests.ModelFiles.Gguf;

/// <summary>
/// Writes GGUF bytes field by field with no checks at all, so tests can build the broken files a
/// real writer would refuse to produce.
/// </summary>
sealed class RawGguf
{
    readonly MemoryStream _stream = new();
    readonly BinaryWriter _out;

    public RawGguf() => _out = new BinaryWriter(_stream, Encoding.UTF8, leaveOpen: true);

    public long Position => _stream.Position;

    public RawGguf Header(uint version, ulong tensorCount, ulong kvCount, string magic = "GGUF")
    {
        _out.Write(Encoding.ASCII.GetBytes(magic));
        _out.Write(version);
        _out.Write(tensorCount);
        _out.Write(kvCount);
        return this;
    }

    public RawGguf Str(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        _out.Write((ulong)bytes.Length);
        _out.Write(bytes);
        return this;
    }

    public RawGguf U8(byte v) { _out.Write(v); return this; }
    public RawGguf U32(uint v) { _out.Write(v); return this; }
    public RawGguf U64(ulong v) { _out.Write(v); return this; }
    public RawGguf Bytes(ReadOnlySpan<byte> v) { _out.Write(v); return this; }

    /// <summary>A key and its u32 type tag; the caller writes the value.</summary>
    public RawGguf Key(string key, uint type) => Str(key).U32(type);

    public RawGguf TensorInfo(string name, ulong[] shape, uint type, ulong offset)
    {
        Str(name).U32((uint)shape.Length);
        foreach (var d in shape) U64(d);
        return U32(type).U64(offset);
    }

    public RawGguf PadTo(int alignment)
    {
        while (_stream.Position % alignment != 0) _out.Write((byte)0);
        return this;
    }

    public string Save(string name)
    {
        _out.Flush();
        var path = Path.Combine(TestPaths.Scratch("gguf-raw"), name);
        File.WriteAllBytes(path, _stream.ToArray());
        return path;
    }
}
