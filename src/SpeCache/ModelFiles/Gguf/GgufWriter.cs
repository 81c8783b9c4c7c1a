using System.Runtime.InteropServices;
using System.Text;
using SpeCache.Quants;

namespace SpeCache.ModelFiles.Gguf;

/// <summary>
/// Writes a GGUF v3 file in one pass without holding the model in memory: declare all metadata
/// (<see cref="SetMetadata"/>) and tensors (<see cref="AddTensor"/>), then stream each tensor's bytes
/// in the declared order with <see cref="WriteTensorData"/> (in as many pieces as you like), then
/// <see cref="Finish"/>. The file is written under a temporary name and renamed by Finish, so a
/// failed or abandoned write never leaves a half file behind at <c>path</c>.
/// Values follow the metadata convention of <see cref="MetadataExtensions"/>.
/// </summary>
public sealed class GgufWriter : IDisposable
{
    // llama.cpp's GGML_MAX_NAME is 64 bytes including the terminating zero.
    const int MaxTensorNameBytes = 63;

    readonly string _path;
    readonly string _tempPath;
    readonly Dictionary<string, object> _metadata = [];
    readonly List<string> _metadataOrder = [];
    readonly List<(string Name, GgmlType Type, long[] Shape, long Bytes)> _tensors = [];
    readonly HashSet<string> _tensorNames = [];
    FileStream? _file;
    BinaryWriter? _out;
    uint _alignment;
    int _current;            // index of the tensor being streamed
    long _currentWritten;    // bytes of it written so far
    bool _finished;

    public GgufWriter(string path)
    {
        _path = path;
        // Unique per writer: two processes making the same file must not write into one temporary.
        _tempPath = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.partial";
    }

    /// <summary>Sets (or replaces, keeping its place) a metadata value; throws for a type GGUF cannot hold.</summary>
    public void SetMetadata(string key, object value)
    {
        RequireHeaderNotWritten();
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(value);
        GgufTypeOf(value, key); // validates, nested arrays included
        if (key == GgufFile.AlignmentKey && (value is not uint a || a == 0 || (a & (a - 1)) != 0))
            throw new ArgumentException($"metadata '{key}' must be a u32 power of two");
        if (_metadata.TryAdd(key, value)) _metadataOrder.Add(key);
        else _metadata[key] = value;
    }

    /// <summary>Declares the next tensor; shape in ggml order (row length first).</summary>
    public void AddTensor(string name, GgmlType type, ReadOnlySpan<long> shape)
    {
        RequireHeaderNotWritten();
        if (string.IsNullOrEmpty(name) || Encoding.UTF8.GetByteCount(name) > MaxTensorNameBytes)
            throw new ArgumentException($"tensor name '{name}' must be 1 to {MaxTensorNameBytes} bytes");
        if (!_tensorNames.Add(name))
            throw new ArgumentException($"tensor '{name}' is declared twice");
        if (shape.Length is < 1 or > 4)
            throw new ArgumentException($"tensor '{name}' has {shape.Length} dimensions (expected 1 to 4)");
        long rows = 1;
        for (int d = 1; d < shape.Length; d++)
        {
            if (shape[d] <= 0) throw new ArgumentException($"tensor '{name}' has dimension {d} of size {shape[d]}");
            rows = checked(rows * shape[d]);
        }
        if (shape[0] <= 0) throw new ArgumentException($"tensor '{name}' has dimension 0 of size {shape[0]}");
        long bytes = checked(GgmlTypeInfo.RowBytes(type, shape[0]) * rows);
        _tensors.Add((name, type, shape.ToArray(), bytes));
    }

    /// <summary>Appends bytes of the current tensor; moves to the next one when this one is complete.</summary>
    public void WriteTensorData(ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        var output = _out ?? WriteHeader();
        while (!data.IsEmpty)
        {
            if (_current >= _tensors.Count)
                throw new InvalidOperationException($"{data.Length} bytes written past the last tensor");
            var tensor = _tensors[_current];
            int take = (int)Math.Min(data.Length, tensor.Bytes - _currentWritten);
            output.Write(data[..take]);
            data = data[take..];
            _currentWritten += take;
            if (_currentWritten == tensor.Bytes)
            {
                Pad(output);
                _current++;
                _currentWritten = 0;
            }
        }
    }

    /// <summary>Name of the tensor whose bytes <see cref="WriteTensorData"/> expects next, or null when all are written.</summary>
    public string? NextTensor => _current < _tensors.Count ? _tensors[_current].Name : null;

    /// <summary>Checks every declared tensor was written in full, flushes, and moves the file into place.</summary>
    public void Finish()
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        var output = _out ?? WriteHeader();
        // Zero-byte tensors cannot exist (shapes are positive), so the counter is exact.
        if (_current < _tensors.Count)
            throw new InvalidOperationException($"tensor '{_tensors[_current].Name}' has {_currentWritten} of {_tensors[_current].Bytes} bytes written");
        output.Dispose();
        _file!.Dispose();
        _finished = true;
        File.Move(_tempPath, _path, overwrite: true);
    }

    BinaryWriter WriteHeader()
    {
        _alignment = _metadata.TryGetValue(GgufFile.AlignmentKey, out var a) ? (uint)a : GgufFile.DefaultAlignment;
        _file = new FileStream(_tempPath, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20);
        var output = _out = new BinaryWriter(_file, Encoding.UTF8, leaveOpen: true);

        output.Write(Encoding.ASCII.GetBytes("GGUF"));
        output.Write(3u);
        output.Write((ulong)_tensors.Count);
        output.Write((ulong)_metadataOrder.Count);
        foreach (var key in _metadataOrder)
        {
            WriteString(output, key);
            var value = _metadata[key];
            output.Write((uint)GgufTypeOf(value, key));
            WriteValue(output, value);
        }
        long offset = 0;
        foreach (var (name, type, shape, bytes) in _tensors)
        {
            WriteString(output, name);
            output.Write((uint)shape.Length);
            foreach (var extent in shape) output.Write((ulong)extent);
            output.Write((uint)type);
            output.Write((ulong)offset);
            offset = GgufFile.AlignUp(offset + bytes, _alignment);
        }
        Pad(output);
        return output;
    }

    void Pad(BinaryWriter output)
    {
        long padding = GgufFile.AlignUp(output.BaseStream.Position, _alignment) - output.BaseStream.Position;
        for (long i = 0; i < padding; i++) output.Write((byte)0);
    }

    static void WriteString(BinaryWriter output, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        output.Write((ulong)bytes.Length);
        output.Write(bytes);
    }

    static GgufValueType GgufTypeOf(object value, string key) => value switch
    {
        byte => GgufValueType.UInt8,
        sbyte => GgufValueType.Int8,
        ushort => GgufValueType.UInt16,
        short => GgufValueType.Int16,
        uint => GgufValueType.UInt32,
        int => GgufValueType.Int32,
        float => GgufValueType.Float32,
        bool => GgufValueType.Bool,
        string => GgufValueType.String,
        ulong => GgufValueType.UInt64,
        long => GgufValueType.Int64,
        double => GgufValueType.Float64,
        Array array => ValidatedArray(array, key),
        _ => throw new ArgumentException($"metadata '{key}': {value.GetType().Name} is not a GGUF value type"),
    };

    static GgufValueType ValidatedArray(Array array, string key)
    {
        ArrayElementType(array, key);
        return GgufValueType.Array;
    }

    static GgufValueType ArrayElementType(Array array, string key)
    {
        var elementType = array.GetType().GetElementType()!;
        if (elementType == typeof(object))
        {
            foreach (var item in array)
                if (item is not Array inner) throw new ArgumentException($"metadata '{key}': an object[] may only hold arrays");
                else ArrayElementType(inner, key);
            return GgufValueType.Array;
        }
        if (elementType.IsArray)
            throw new ArgumentException($"metadata '{key}': arrays of arrays must be object[]");
        if (elementType == typeof(string))
        {
            if (Array.IndexOf(array, null) >= 0) throw new ArgumentException($"metadata '{key}': a string array holds a null");
            return GgufValueType.String;
        }
        // A default element stands for the type (char and friends are refused by GgufTypeOf).
        return elementType.IsPrimitive
            ? GgufTypeOf(Activator.CreateInstance(elementType)!, key)
            : throw new ArgumentException($"metadata '{key}': {elementType.Name}[] is not a GGUF array type");
    }

    static void WriteValue(BinaryWriter output, object value)
    {
        switch (value)
        {
            case byte v: output.Write(v); break;
            case sbyte v: output.Write(v); break;
            case ushort v: output.Write(v); break;
            case short v: output.Write(v); break;
            case uint v: output.Write(v); break;
            case int v: output.Write(v); break;
            case float v: output.Write(v); break;
            case bool v: output.Write((byte)(v ? 1 : 0)); break;
            case string v: WriteString(output, v); break;
            case ulong v: output.Write(v); break;
            case long v: output.Write(v); break;
            case double v: output.Write(v); break;
            case Array array:
                output.Write((uint)ArrayElementType(array, "array"));
                output.Write((ulong)array.Length);
                if (array.GetType().GetElementType()!.IsPrimitive)
                    // Numbers and bools are stored exactly as .NET lays them out (little-endian, bool as 0/1).
                    output.Write(MemoryMarshal.CreateReadOnlySpan(ref MemoryMarshal.GetArrayDataReference(array), checked((int)Buffer.ByteLength(array))));
                else
                    foreach (var item in array) WriteValue(output, item);
                break;
        }
    }

    void RequireHeaderNotWritten()
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        if (_out != null) throw new InvalidOperationException("metadata and tensors must be declared before any tensor data is written");
    }

    public void Dispose()
    {
        if (_finished) return;
        _finished = true;
        _out?.Dispose();
        _file?.Dispose();
        if (File.Exists(_tempPath)) File.Delete(_tempPath);
    }
}
