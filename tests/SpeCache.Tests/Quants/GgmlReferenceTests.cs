using System.Runtime.InteropServices;
using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

/// <summary>
/// Our reference quantizers against ggml's own (<c>quantize_row_*_ref</c> exported by the peer's
/// prebuilt libggml-base): the files we write must be the files llama.cpp writes, byte for byte.
/// Skipped when peer/setup.sh has not installed the library.
/// </summary>
public unsafe class GgmlReferenceTests
{
    static readonly string LibraryPath = Path.Combine(TestPaths.Peer, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "linux-x64", "libggml-base.so");
    static readonly Lazy<nint> Library = new(() => NativeLibrary.Load(LibraryPath));

    static nint Export(string name)
    {
        if (!OperatingSystem.IsLinux() || !RuntimeInformation.ProcessArchitecture.Equals(Architecture.X64) || !File.Exists(LibraryPath))
            Assert.Skip($"llama.cpp peer library not installed ({LibraryPath}); run peer/setup.sh");
        return NativeLibrary.GetExport(Library.Value, name);
    }

    static string GgmlName(GgmlType type) => type switch
    {
        GgmlType.Q8_0 => "q8_0",
        GgmlType.Q4_0 => "q4_0",
        GgmlType.Q4_K => "q4_K",
        GgmlType.Q6_K => "q6_K",
        GgmlType.Q8_K => "q8_K",
        _ => throw new ArgumentException(type.ToString()),
    };

    static byte[] GgmlQuantize(string function, float[] x, long bytes)
    {
        var f = (delegate* unmanaged<float*, byte*, long, void>)Export(function);
        var y = new byte[bytes];
        fixed (float* px = x)
        fixed (byte* py = y)
            f(px, py, x.Length);
        return y;
    }

    /// <summary>Rows of different character: Gaussian, outliers, tiny, all positive, with zero blocks, constants.</summary>
    static IEnumerable<float[]> Rows(int cols)
    {
        yield return TestRows.Gaussian(cols, 1);
        yield return TestRows.WithOutliers(cols, 2);
        yield return TestRows.Gaussian(cols, 3, 1e-3f);
        yield return TestRows.Gaussian(cols, 4).Select(MathF.Abs).ToArray();
        var sparse = TestRows.Gaussian(cols, 5);
        Array.Clear(sparse, 0, 256);
        yield return sparse;
        var constant = new float[cols];
        Array.Fill(constant, 0.75f);
        yield return constant;
        var rng = new Random(6);
        yield return Enumerable.Range(0, cols).Select(_ => (float)rng.Next(-20, 21) / 4).ToArray(); // many exact ties
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void QuantizeRowMatchesGgmlByteForByte(GgmlType type)
    {
        const int cols = 4096;
        foreach (var x in Rows(cols))
        {
            var expected = GgmlQuantize($"quantize_row_{GgmlName(type)}_ref", x, GgmlTypeInfo.RowBytes(type, cols));
            Assert.Equal(expected, TestRows.Quantize(type, x));
        }
    }

    [Fact]
    public void Q8_KMatchesGgmlByteForByte()
    {
        const int cols = 4096;
        foreach (var x in Rows(cols))
        {
            var expected = GgmlQuantize("quantize_row_q8_K_ref", x, GgmlTypeInfo.RowBytes(GgmlType.Q8_K, cols));
            var ours = new byte[expected.Length];
            Q8_K.QuantizeRow(x, ours);
            Assert.Equal(expected, ours);
        }
    }

    [Theory]
    [InlineData(GgmlType.F16, "ggml_fp32_to_fp16_row")]
    [InlineData(GgmlType.BF16, "ggml_fp32_to_bf16_row_ref")]
    public void FloatRowsMatchGgml(GgmlType type, string function)
    {
        const int cols = 4099;
        var x = TestRows.WithOutliers(cols, 7);
        x[0] = float.NaN;
        x[1] = float.PositiveInfinity;
        x[2] = 1e-40f; // subnormal float
        x[3] = 70000f; // beyond half's range
        x[4] = 3e-6f;  // subnormal half
        Assert.Equal(GgmlQuantize(function, x, cols * 2), TestRows.Quantize(type, x));
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void DequantizeRowMatchesGgml(GgmlType type)
    {
        const int cols = 2048;
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, cols)];
        // Quantized real rows rather than random bytes: random half scales include NaN and Inf.
        bytes = TestRows.Quantize(type, TestRows.WithOutliers(cols, 8));
        var f = (delegate* unmanaged<byte*, float*, long, void>)Export($"dequantize_row_{GgmlName(type)}");
        var expected = new float[cols];
        fixed (byte* pb = bytes)
        fixed (float* py = expected)
            f(pb, py, cols);
        Assert.Equal(expected, TestRows.Dequantize(type, bytes, cols));
    }
}
