using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Quants;

namespace SpeCache.Tests.ModelFiles.Gguf;

public class GgufWriterTests
{
    static readonly Dictionary<string, object> AllTypes = new()
    {
        ["u8"] = (byte)200,
        ["i8"] = (sbyte)-100,
        ["u16"] = (ushort)60000,
        ["i16"] = (short)-30000,
        ["u32"] = 4_000_000_000u,
        ["i32"] = -2_000_000_000,
        ["f32"] = 0.1f,
        ["bool"] = true,
        ["string"] = "ünïcode ✓",
        ["u64"] = ulong.MaxValue,
        ["i64"] = long.MinValue,
        ["f64"] = Math.PI,
        ["strings"] = new[] { "", "a", "bc" },
        ["floats"] = new[] { 1f, -2.5f },
        ["ints"] = new[] { 1, -2, 3 },
        ["uints"] = new[] { 1u, 2u },
        ["bytes"] = new byte[] { 1, 2, 255 },
        ["longs"] = new[] { long.MaxValue, -1L },
        ["doubles"] = new[] { 1e300 },
        ["bools"] = new[] { true, false, true },
        ["empty"] = Array.Empty<int>(),
        ["nested"] = new object[] { new[] { 1f }, new[] { "x", "y" }, new object[] { new[] { (short)5 } } },
    };

    [Fact]
    public void RoundTripsEveryValueTypeAndTensorBytes()
    {
        var path = Path.Combine(TestPaths.Scratch("gguf-writer"), "all-types.gguf");
        var random = new Random(1);
        var a = new byte[5 * 4];
        var b = new byte[34 * 3];
        random.NextBytes(a);
        random.NextBytes(b);
        using (var writer = new GgufWriter(path))
        {
            foreach (var (key, value) in AllTypes) writer.SetMetadata(key, value);
            writer.AddTensor("a", GgmlType.F32, [5]);
            writer.AddTensor("b", GgmlType.Q8_0, [32, 3]);
            // Streamed in pieces that straddle the tensor boundary.
            writer.WriteTensorData(a.AsSpan(0, 7));
            writer.WriteTensorData([.. a.AsSpan(7), .. b.AsSpan(0, 10)]);
            writer.WriteTensorData(b.AsSpan(10));
            Assert.Null(writer.NextTensor);
            writer.Finish();
        }

        using var gguf = GgufFile.Open(path);
        Assert.Equal(3u, gguf.Version);
        Assert.Equal(AllTypes.Keys, gguf.MetadataKeys);
        foreach (var (key, value) in AllTypes)
        {
            Assert.Equal(value.GetType(), gguf.Metadata[key].GetType());
            Assert.Equal(value, gguf.Metadata[key]);
        }
        var nested = gguf.Metadata.GetArray<object>("nested");
        Assert.Equal([(short)5], (short[])((object[])nested[2])[0]);
        Assert.Equal(a, gguf.Tensors["a"].Bytes.ToArray());
        Assert.Equal(b, gguf.Tensors["b"].Bytes.ToArray());
        Assert.Equal(gguf.DataOffset + 32 + 128, gguf.FileLength); // each tensor padded to 32 bytes, the last one too
    }

    [Fact]
    public void CopyOfTheVendoredModelIsByteIdentical()
    {
        var path = Path.Combine(TestPaths.Scratch("gguf-writer"), "copy.gguf");
        using (var source = GgufFile.Open(TestPaths.Llama2TinyRandom))
        {
            using var writer = new GgufWriter(path);
            foreach (var key in source.MetadataKeys) writer.SetMetadata(key, source.Metadata[key]);
            foreach (var t in source.TensorsInFileOrder) writer.AddTensor(t.Name, t.Type, t.Shape);
            foreach (var t in source.TensorsInFileOrder)
                for (long row = 0; row < t.Rows; row++) writer.WriteTensorData(t.Row(row));
            writer.Finish();
        }
        Assert.Equal(File.ReadAllBytes(TestPaths.Llama2TinyRandom), File.ReadAllBytes(path));
    }

    [Fact]
    public void IncompleteWriteLeavesNoFile()
    {
        var path = Path.Combine(TestPaths.Scratch("gguf-writer"), "incomplete.gguf");
        File.Delete(path);
        using (var writer = new GgufWriter(path))
        {
            writer.AddTensor("a", GgmlType.F32, [4]);
            writer.WriteTensorData(new byte[8]);
            var error = Assert.Throws<InvalidOperationException>(writer.Finish);
            Assert.Contains("tensor 'a' has 8 of 16 bytes written", error.Message);
            Assert.Throws<InvalidOperationException>(() => writer.AddTensor("b", GgmlType.F32, [4]));
        }
        Assert.False(File.Exists(path));
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, "incomplete*"));
    }

    [Fact]
    public void RefusesWhatGgufCannotHold()
    {
        using var writer = new GgufWriter(Path.Combine(TestPaths.Scratch("gguf-writer"), "refused.gguf"));
        Assert.Throws<ArgumentException>(() => writer.SetMetadata("d", 1m));
        Assert.Throws<ArgumentException>(() => writer.SetMetadata("jagged", new int[][] { [1] }));
        Assert.Throws<ArgumentException>(() => writer.SetMetadata("uris", new[] { new Uri("http://x") }));
        Assert.Throws<ArgumentException>(() => writer.SetMetadata("chars", new[] { 'a' }));
        Assert.Throws<ArgumentException>(() => writer.SetMetadata("mixed", new object[] { 1 }));
        Assert.Throws<ArgumentException>(() => writer.SetMetadata(GgufFile.AlignmentKey, 24u));
        writer.AddTensor("a", GgmlType.F32, [4]);
        Assert.Throws<ArgumentException>(() => writer.AddTensor("a", GgmlType.F32, [4]));
        Assert.Throws<ArgumentException>(() => writer.AddTensor("q", GgmlType.Q8_0, [33]));
        Assert.Throws<ArgumentException>(() => writer.AddTensor(new string('x', 64), GgmlType.F32, [4]));
        Assert.Throws<ArgumentException>(() => writer.AddTensor("z", GgmlType.F32, [4, 0]));
    }
}
