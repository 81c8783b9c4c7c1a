using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Quants;

namespace SpeCache.Tests.ModelFiles.Gguf;

public class GgufFileTests
{
    const uint F32 = 0, String = 8, Array = 9, U32 = 4; // F32 is the ggml tensor type; the rest are GGUF value types

    /// <summary>A valid file with one 4x2 F32 tensor: the baseline the corrupt variants change one thing in.</summary>
    static RawGguf OneTensor(string name = "t", uint type = 0, ulong offset = 0, ulong[]? shape = null, ulong tensorCount = 1)
    {
        var raw = new RawGguf().Header(3, tensorCount, 1)
            .Key("general.name", String).Str("tiny");
        raw.TensorInfo(name, shape ?? [4, 2], type, offset);
        return raw;
    }

    static void WithData(RawGguf raw, int bytes)
    {
        raw.PadTo(32);
        for (int i = 0; i < bytes; i++) raw.U8((byte)i);
    }

    [Fact]
    public void OpensTheVendoredModel()
    {
        using var gguf = GgufFile.Open(TestPaths.Llama2TinyRandom);
        Assert.Equal(3u, gguf.Version);
        Assert.Equal("llama", gguf.Metadata.GetString("general.architecture"));
        Assert.Equal(32u, gguf.Alignment);
        Assert.Equal(0, gguf.DataOffset % gguf.Alignment);
        Assert.Equal(gguf.Tensors.Count, gguf.TensorsInFileOrder.Count);
        Assert.Equal(gguf.Metadata.Count, gguf.MetadataKeys.Count);
        var embd = gguf.Tensors["token_embd.weight"];
        Assert.Equal(gguf.Metadata.GetInt64("llama.embedding_length"), embd.Shape[0]);
        Assert.Equal(gguf.Metadata.GetArray<string>("tokenizer.ggml.tokens").Length, embd.Shape[1]);
        // The last tensor ends inside the file, and the views point into the map.
        var last = gguf.TensorsInFileOrder[^1];
        Assert.True(last.ByteLength > 0);
        Assert.Equal(last.ByteLength, last.Bytes.Length);
    }

    [Fact]
    public void ReadsEveryValueTypeAndTensorViews()
    {
        var raw = new RawGguf().Header(2, 2, 15)
            .Key("u8", 0).U8(200)
            .Key("i8", 1).U8(0xFF)
            .Key("u16", 2).Bytes([0x34, 0x12])
            .Key("i16", 3).Bytes([0xFE, 0xFF])
            .Key("u32", 4).U32(4_000_000_000)
            .Key("i32", 5).U32(unchecked((uint)-7))
            .Key("f32", 6).Bytes(BitConverter.GetBytes(1.5f))
            .Key("bool", 7).U8(1)
            .Key("str", 8).Str("héllo")
            .Key("u64", 10).U64(ulong.MaxValue)
            .Key("i64", 11).U64(unchecked((ulong)-5L))
            .Key("f64", 12).Bytes(BitConverter.GetBytes(2.25))
            .Key("strings", Array).U32(String).U64(2).Str("a").Str("bc")
            .Key("ints", Array).U32(5).U64(3).U32(1).U32(2).U32(unchecked((uint)-3))
            .Key("nested", Array).U32(Array).U64(2)
                .U32(6).U64(1).Bytes(BitConverter.GetBytes(0.5f))
                .U32(7).U64(2).U8(1).U8(0);
        raw.TensorInfo("a", [4], F32, 0).TensorInfo("b", [32, 2], (uint)GgmlType.Q8_0, 32);
        raw.PadTo(32);
        raw.Bytes(new byte[32]); // "a": 16 bytes, padded to 32
        raw.Bytes(new byte[68]);
        using var gguf = GgufFile.Open(raw.Save("all-types.gguf"));

        var m = gguf.Metadata;
        Assert.Equal(2u, gguf.Version);
        Assert.Equal((byte)200, m["u8"]);
        Assert.Equal((sbyte)-1, m["i8"]);
        Assert.Equal((ushort)0x1234, m["u16"]);
        Assert.Equal((short)-2, m["i16"]);
        Assert.Equal(4_000_000_000u, m["u32"]);
        Assert.Equal(-7, m["i32"]);
        Assert.Equal(1.5f, m["f32"]);
        Assert.Equal(true, m["bool"]);
        Assert.Equal("héllo", m["str"]);
        Assert.Equal(ulong.MaxValue, m["u64"]);
        Assert.Equal(-5L, m["i64"]);
        Assert.Equal(2.25, m["f64"]);
        Assert.Equal(["a", "bc"], m.GetArray<string>("strings"));
        Assert.Equal([1, 2, -3], m.GetArray<int>("ints"));
        var nested = m.GetArray<object>("nested");
        Assert.Equal([0.5f], (float[])nested[0]);
        Assert.Equal([true, false], (bool[])nested[1]);
        Assert.Equal(["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64", "i64", "f64", "strings", "ints", "nested"], gguf.MetadataKeys);

        Assert.Equal(["a", "b"], gguf.TensorsInFileOrder.Select(t => t.Name));
        Assert.Equal(gguf.DataOffset + 32, gguf.FileLength - 68);
        Assert.Equal(2, gguf.Tensors["b"].Rows);
        Assert.Equal(34, gguf.Tensors["b"].RowBytes);
    }

    [Fact]
    public void TruncationAnywhereIsAOneLineError()
    {
        var bytes = File.ReadAllBytes(TestPaths.Llama2TinyRandom);
        long dataOffset;
        using (var gguf = GgufFile.Open(TestPaths.Llama2TinyRandom))
            dataOffset = gguf.DataOffset;
        long lastTensorEnd = bytes.Length;
        // Dense in the header and the first keys, then spread over the metadata, the tensor infos and the data.
        var cuts = new SortedSet<long>();
        for (long c = 1; c < 64; c++) cuts.Add(c);
        for (int i = 1; i < 40; i++) cuts.Add(dataOffset * i / 40);
        for (long c = dataOffset - 40; c < dataOffset; c += 3) cuts.Add(c);
        for (int i = 0; i < 8; i++) cuts.Add(dataOffset + (lastTensorEnd - dataOffset) * i / 8 + 1);
        cuts.Add(lastTensorEnd - 1);

        var path = Path.Combine(TestPaths.Scratch("gguf-truncated"), "cut.gguf");
        foreach (var cut in cuts)
        {
            File.WriteAllBytes(path, bytes.AsSpan(0, (int)cut).ToArray());
            var error = Assert.Throws<InvalidDataException>(() => GgufFile.Open(path).Dispose());
            Assert.DoesNotContain('\n', error.Message);
            Assert.Contains("cut.gguf", error.Message);
        }
    }

    [Fact]
    public void EmptyFileIsRefused()
    {
        var path = Path.Combine(TestPaths.Scratch("gguf-raw"), "empty.gguf");
        File.WriteAllBytes(path, []);
        Assert.Contains("empty", Assert.Throws<InvalidDataException>(() => GgufFile.Open(path)).Message);
    }

    [Fact]
    public void WrongMagicIsRefused()
    {
        var path = new RawGguf().Header(3, 0, 0, magic: "GGML").Save("magic.gguf");
        Assert.Contains("not a GGUF file", Assert.Throws<InvalidDataException>(() => GgufFile.Open(path)).Message);
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(4u)]
    [InlineData(0x03000000u)]
    public void UnsupportedVersionIsRefused(uint version)
    {
        var path = new RawGguf().Header(version, 0, 0).Save($"version{version}.gguf");
        var error = Assert.Throws<NotSupportedException>(() => GgufFile.Open(path));
        Assert.Contains($"version {version} is not supported", error.Message);
    }

    [Fact]
    public void UnknownTensorTypeIsRefused()
    {
        var raw = OneTensor(type: 99);
        WithData(raw, 32);
        var error = Assert.Throws<NotSupportedException>(() => GgufFile.Open(raw.Save("type99.gguf")));
        Assert.Contains("tensor 't'", error.Message);
        Assert.Contains("unknown ggml type 99", error.Message);
    }

    [Fact]
    public void TensorDataPastTheEndIsRefused()
    {
        var raw = OneTensor(offset: 64);
        WithData(raw, 32);
        var error = Assert.Throws<InvalidDataException>(() => GgufFile.Open(raw.Save("past-end.gguf")));
        Assert.Contains("runs past the end", error.Message);

        // An offset so large that offset + size overflows must not wrap around into the file.
        raw = OneTensor(offset: ulong.MaxValue - 31);
        WithData(raw, 32);
        Assert.Throws<InvalidDataException>(() => GgufFile.Open(raw.Save("offset-overflow.gguf")));
    }

    [Fact]
    public void MisalignedOffsetIsRefused()
    {
        var raw = OneTensor(offset: 4);
        WithData(raw, 64);
        var error = Assert.Throws<InvalidDataException>(() => GgufFile.Open(raw.Save("misaligned.gguf")));
        Assert.Contains("not a multiple of the alignment 32", error.Message);
    }

    [Fact]
    public void DuplicateTensorNamesAreRefused()
    {
        var raw = OneTensor(tensorCount: 2).TensorInfo("t", [4, 2], F32, 32);
        WithData(raw, 64);
        var error = Assert.Throws<InvalidDataException>(() => GgufFile.Open(raw.Save("dup-tensor.gguf")));
        Assert.Contains("duplicate tensor name 't'", error.Message);
    }

    [Fact]
    public void DuplicateMetadataKeysAreRefused()
    {
        var raw = new RawGguf().Header(3, 0, 2).Key("k", U32).U32(1).Key("k", U32).U32(2);
        Assert.Contains("duplicate metadata key 'k'", Assert.Throws<InvalidDataException>(() => GgufFile.Open(raw.Save("dup-key.gguf"))).Message);
    }

    [Fact]
    public void AbsurdLengthsAndCountsAreRefusedBeforeAllocating()
    {
        void Refused(RawGguf raw, string name, string expected)
        {
            raw.Bytes(new byte[64]);
            var error = Assert.Throws<InvalidDataException>(() => GgufFile.Open(raw.Save(name)));
            Assert.Contains(expected, error.Message);
            Assert.DoesNotContain('\n', error.Message);
        }
        Refused(new RawGguf().Header(3, 0, 1).U64(1UL << 60), "huge-key.gguf", "string length 1152921504606846976");
        Refused(new RawGguf().Header(3, 0, 1).Key("s", String).U64(1UL << 60), "huge-string.gguf", "metadata entry 0 ('s')");
        Refused(new RawGguf().Header(3, 1UL << 60, 0), "huge-tensor-count.gguf", "tensor count");
        Refused(new RawGguf().Header(3, 0, ulong.MaxValue), "huge-kv-count.gguf", "metadata count");
        Refused(new RawGguf().Header(3, 0, 1).Key("a", Array).U32(U32).U64(1UL << 62), "huge-array.gguf", "array of 4611686018427387904");
        Refused(new RawGguf().Header(3, 0, 1).Key("a", Array).U32(77).U64(1), "bad-element-type.gguf", "unknown array element type 77");
        Refused(new RawGguf().Header(3, 0, 1).Key("x", 13), "bad-value-type.gguf", "unknown metadata value type 13");
        Refused(OneTensor(shape: [4, 2, 1, 1, 1]), "five-dims.gguf", "5 dimensions");
        Refused(OneTensor(shape: [1UL << 40, 1UL << 40]), "huge-shape.gguf", "too large");
        Refused(OneTensor(type: (uint)GgmlType.Q8_0, shape: [33, 1]), "partial-block.gguf", "not a whole number of 32-element blocks");

        var deep = new RawGguf().Header(3, 0, 1).Key("deep", Array);
        for (int i = 0; i < 40; i++) deep.U32(Array).U64(1);
        Refused(deep, "deep.gguf", "nested more than");
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(24u)]
    public void AlignmentMustBeAPowerOfTwo(uint alignment)
    {
        var raw = new RawGguf().Header(3, 0, 1).Key(GgufFile.AlignmentKey, U32).U32(alignment);
        var error = Assert.Throws<InvalidDataException>(() => GgufFile.Open(raw.Save($"align{alignment}.gguf")));
        Assert.Contains($"alignment {alignment} is not a power of two", error.Message);
    }

    [Fact]
    public void CustomAlignmentPlacesTheDataSection()
    {
        var raw = new RawGguf().Header(3, 1, 1).Key(GgufFile.AlignmentKey, U32).U32(64);
        raw.TensorInfo("t", [4], F32, 0).PadTo(64);
        long dataAt = raw.Position;
        raw.Bytes(BitConverter.GetBytes(3f)).Bytes(new byte[12]);
        using var gguf = GgufFile.Open(raw.Save("align64.gguf"));
        Assert.Equal(64u, gguf.Alignment);
        Assert.Equal(dataAt, gguf.DataOffset);
        Assert.Equal(3f, gguf.Tensors["t"].AsFloats()[0]);
    }
}
