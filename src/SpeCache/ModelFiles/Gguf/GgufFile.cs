using System.IO.MemoryMappedFiles;
using SpeCache.Quants;
using SpeCache.Tensors;

namespace SpeCache.ModelFiles.Gguf;

/// <summary>
/// A GGUF (v2 or v3) file, memory-mapped read-only. Metadata is parsed into plain .NET values
/// (see <see cref="MetadataExtensions"/> for the convention); tensors are <see cref="WeightTensor"/>
/// views straight into the map, so nothing is copied and the views die with <see cref="Dispose"/>.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    public const uint DefaultAlignment = 32;
    public const string AlignmentKey = "general.alignment";

    // ggml's GGML_MAX_DIMS; a tensor with more dimensions cannot exist in llama.cpp either.
    const int MaxDims = 4;
    // Nested arrays recurse; a corrupt file must not be able to blow the stack.
    const int MaxArrayNesting = 16;

    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    byte* _base;

    GgufFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePointer, long length)
    {
        Path = path;
        FileLength = length;
        _map = map;
        _view = view;
        _base = basePointer;
    }

    public string Path { get; }
    public long FileLength { get; }
    /// <summary>2 or 3.</summary>
    public uint Version { get; private set; }
    public IReadOnlyDictionary<string, object> Metadata { get; private set; } = null!;
    /// <summary>Metadata keys in the order the file lists them.</summary>
    public IReadOnlyList<string> MetadataKeys { get; private set; } = null!;
    public IReadOnlyDictionary<string, WeightTensor> Tensors { get; private set; } = null!;
    /// <summary>The same tensors in the order the file lists them.</summary>
    public IReadOnlyList<WeightTensor> TensorsInFileOrder { get; private set; } = null!;
    /// <summary>Alignment of the data section and of every tensor in it (general.alignment, default 32).</summary>
    public uint Alignment { get; private set; }
    /// <summary>File offset where the tensor data section starts; tensor offsets are relative to it.</summary>
    public long DataOffset { get; private set; }

    public static GgufFile Open(string path)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = stream.Length;
        if (length == 0)
        {
            stream.Dispose();
            throw new InvalidDataException($"GGUF '{System.IO.Path.GetFileName(path)}': file is empty");
        }
        var map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        var file = new GgufFile(path, map, view, pointer + view.PointerOffset, length);
        try
        {
            file.Parse();
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    void Parse()
    {
        var cursor = new GgufCursor(_base, FileLength, System.IO.Path.GetFileName(Path));

        uint magic = cursor.Read<uint>();
        if (magic != 0x46554747) // "GGUF" read as a little-endian uint
            throw cursor.Error($"not a GGUF file (magic 0x{magic:X8}, expected \"GGUF\")");
        Version = cursor.Read<uint>();
        if (Version != 2 && Version != 3)
        {
            string hint = Version == 1 ? " (GGUF v1 is obsolete; re-convert the model)"
                : (Version & 0xFFFF) == 0 ? " (a big-endian GGUF?)" : "";
            throw new NotSupportedException($"GGUF '{System.IO.Path.GetFileName(Path)}': version {Version} is not supported (supported: 2, 3){hint}");
        }
        long tensorCount = ReadCount(cursor, "tensor count", minBytesEach: 8 + 4 + 8 + 4 + 8);
        long kvCount = ReadCount(cursor, "metadata count", minBytesEach: 8 + 4 + 1);

        // Counts are only bounded by the file size here, so they size nothing until the entries are read.
        var metadata = new Dictionary<string, object>();
        var keys = new List<string>();
        for (long i = 0; i < kvCount; i++)
        {
            cursor.Context = $"metadata entry {i}";
            string key = cursor.ReadString();
            cursor.Context = $"metadata entry {i} ('{key}')";
            var type = (GgufValueType)cursor.Read<uint>();
            object value = ReadValue(cursor, type, depth: 0);
            if (!metadata.TryAdd(key, value))
                throw cursor.Error($"duplicate metadata key '{key}'");
            keys.Add(key);
        }
        Metadata = metadata;
        MetadataKeys = keys;

        cursor.Context = $"metadata '{AlignmentKey}'";
        Alignment = DefaultAlignment;
        if (metadata.TryGetInt64(AlignmentKey, out long alignment))
        {
            if (alignment <= 0 || alignment > int.MaxValue || (alignment & (alignment - 1)) != 0)
                throw cursor.Error($"alignment {alignment} is not a power of two");
            Alignment = (uint)alignment;
        }

        var infos = new List<(string Name, long[] Shape, GgmlType Type, ulong Offset, long InfoAt)>();
        for (long i = 0; i < tensorCount; i++)
        {
            cursor.Context = $"tensor info {i}";
            long infoAt = cursor.Position;
            string name = cursor.ReadString();
            cursor.Context = $"tensor info {i} ('{name}')";
            uint dims = cursor.Read<uint>();
            if (dims < 1 || dims > MaxDims)
                throw cursor.Error($"tensor has {dims} dimensions (expected 1 to {MaxDims})");
            var shape = new long[dims];
            for (int d = 0; d < dims; d++)
            {
                ulong extent = cursor.Read<ulong>();
                if (extent > long.MaxValue)
                    throw cursor.Error($"dimension {d} has size {extent}");
                shape[d] = (long)extent;
            }
            var type = (GgmlType)cursor.Read<uint>();
            ulong offset = cursor.Read<ulong>();
            infos.Add((name, shape, type, offset, infoAt));
        }

        DataOffset = AlignUp(cursor.Position, Alignment);

        var tensors = new Dictionary<string, WeightTensor>(infos.Count);
        var ordered = new List<WeightTensor>(infos.Count);
        foreach (var info in infos)
        {
            var tensor = CreateTensor(info.Name, info.Shape, info.Type, info.Offset, info.InfoAt);
            if (!tensors.TryAdd(info.Name, tensor))
                throw Error($"tensor info at byte {info.InfoAt}: duplicate tensor name '{info.Name}'");
            ordered.Add(tensor);
        }
        Tensors = tensors;
        TensorsInFileOrder = ordered;
    }

    WeightTensor CreateTensor(string name, long[] shape, GgmlType type, ulong offset, long infoAt)
    {
        string where = $"tensor '{name}' (info at byte {infoAt})";
        if (!GgmlTypeInfo.IsKnown(type))
            throw new NotSupportedException($"GGUF '{System.IO.Path.GetFileName(Path)}', {where}: unknown ggml type {(uint)type}");
        var (blockSize, _) = GgmlTypeInfo.Geometry(type);
        if (shape[0] % blockSize != 0)
            throw Error($"{where}: a {type} row of {shape[0]} elements is not a whole number of {blockSize}-element blocks");

        long byteLength;
        try
        {
            long rows = 1;
            for (int d = 1; d < shape.Length; d++) rows = checked(rows * shape[d]);
            byteLength = checked(GgmlTypeInfo.RowBytes(type, shape[0]) * rows);
        }
        catch (OverflowException)
        {
            throw Error($"{where}: shape [{string.Join(", ", shape)}] is too large");
        }

        if (offset % Alignment != 0)
            throw Error($"{where}: data offset {offset} is not a multiple of the alignment {Alignment}");
        long available = FileLength - DataOffset;
        if (offset > (ulong)Math.Max(available, 0) || byteLength > available - (long)offset)
            throw Error($"{where}: data [{offset}, +{byteLength}) runs past the end of the file (data section holds {Math.Max(available, 0)} bytes)");

        return new WeightTensor(name, type, shape, _base + DataOffset + (long)offset, byteLength);
    }

    static long ReadCount(GgufCursor cursor, string what, int minBytesEach)
    {
        cursor.Context = $"header {what}";
        ulong count = cursor.Read<ulong>();
        // Each entry takes at least minBytesEach bytes, so a count the file cannot hold is corrupt; refusing it
        // here also keeps a bad count from sizing an allocation.
        if (count > (ulong)(cursor.Remaining / minBytesEach))
            throw cursor.Error($"{what} {count} cannot fit in the {cursor.Remaining} bytes left");
        return (long)count;
    }

    static object ReadValue(GgufCursor cursor, GgufValueType type, int depth) => type switch
    {
        GgufValueType.UInt8 => cursor.Read<byte>(),
        GgufValueType.Int8 => cursor.Read<sbyte>(),
        GgufValueType.UInt16 => cursor.Read<ushort>(),
        GgufValueType.Int16 => cursor.Read<short>(),
        GgufValueType.UInt32 => cursor.Read<uint>(),
        GgufValueType.Int32 => cursor.Read<int>(),
        GgufValueType.Float32 => cursor.Read<float>(),
        GgufValueType.Bool => cursor.Read<byte>() != 0,
        GgufValueType.String => cursor.ReadString(),
        GgufValueType.UInt64 => cursor.Read<ulong>(),
        GgufValueType.Int64 => cursor.Read<long>(),
        GgufValueType.Float64 => cursor.Read<double>(),
        GgufValueType.Array => ReadArray(cursor, depth),
        _ => throw cursor.Error($"unknown metadata value type {(uint)type}"),
    };

    static Array ReadArray(GgufCursor cursor, int depth)
    {
        if (depth >= MaxArrayNesting)
            throw cursor.Error($"arrays nested more than {MaxArrayNesting} deep");
        var elementType = (GgufValueType)cursor.Read<uint>();
        if (!GgufValueTypes.IsKnown(elementType))
            throw cursor.Error($"unknown array element type {(uint)elementType}");
        ulong rawCount = cursor.Read<ulong>();
        if (rawCount > (ulong)(cursor.Remaining / GgufValueTypes.MinSize(elementType)))
            throw cursor.Error($"array of {rawCount} {elementType} values cannot fit in the {cursor.Remaining} bytes left");
        long count = (long)rawCount;
        switch (elementType)
        {
            case GgufValueType.UInt8: return cursor.ReadArray<byte>(count);
            case GgufValueType.Int8: return cursor.ReadArray<sbyte>(count);
            case GgufValueType.UInt16: return cursor.ReadArray<ushort>(count);
            case GgufValueType.Int16: return cursor.ReadArray<short>(count);
            case GgufValueType.UInt32: return cursor.ReadArray<uint>(count);
            case GgufValueType.Int32: return cursor.ReadArray<int>(count);
            case GgufValueType.Float32: return cursor.ReadArray<float>(count);
            case GgufValueType.UInt64: return cursor.ReadArray<ulong>(count);
            case GgufValueType.Int64: return cursor.ReadArray<long>(count);
            case GgufValueType.Float64: return cursor.ReadArray<double>(count);
            case GgufValueType.Bool:
                {
                    var raw = cursor.ReadArray<byte>(count);
                    var flags = new bool[count];
                    for (long i = 0; i < count; i++) flags[i] = raw[i] != 0;
                    return flags;
                }
            case GgufValueType.String:
                {
                    var strings = new string[count];
                    for (long i = 0; i < count; i++) strings[i] = cursor.ReadString();
                    return strings;
                }
            default:
                {
                    var arrays = new object[count];
                    for (long i = 0; i < count; i++) arrays[i] = ReadArray(cursor, depth + 1);
                    return arrays;
                }
        }
    }

    InvalidDataException Error(string message) => new($"GGUF '{System.IO.Path.GetFileName(Path)}', {message}");

    internal static long AlignUp(long position, uint alignment) => (position + alignment - 1) / alignment * alignment;

    public void Dispose()
    {
        if (_base != null)
        {
            _base = null;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
        _view.Dispose();
        _map.Dispose();
    }
}
