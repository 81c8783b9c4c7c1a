using SpeCache.Quants;
using SpeCache.Tensors;

namespace SpeCache.Tests.Quants;

public unsafe class TileKernelTests
{
    /// <summary>Every tile kernel by name, each format's at every width, so a CPU that runs the wide one tests the narrow one too.</summary>
    static readonly Dictionary<string, (GgmlType Type, TileKernel Kernel, bool Runs, string Needs)> Kernels = new()
    {
        ["Q8_0"] = (GgmlType.Q8_0, Q8_0Tiles<Q8_0Weights>.Instance, TileKernel.IsSupported, "AVX2 and FMA"),
        ["Q4_0/pairs"] = (GgmlType.Q4_0, Q4_0Tiles.Instance, Q4_0Tiles.Supported, "AVX2 and FMA"),
        ["Q4_0"] = (GgmlType.Q4_0, Q8_0Tiles<Q4_0Weights>.Instance, TileKernel.IsSupported, "AVX2 and FMA"),
        ["Q4_K/512"] = (GgmlType.Q4_K, Q4_KTiles.Instance, Q4_KTiles.Supported, "AVX2, FMA and AVX512-BW"),
        ["Q4_K/256"] = (GgmlType.Q4_K, Q4_KTiles256.Instance, Q4_KTiles256.Supported, "AVX2 and FMA"),
        ["Q6_K/512"] = (GgmlType.Q6_K, Q6_KTiles.Instance, Q6_KTiles.Supported, "AVX2, FMA and AVX512-BW"),
        ["Q6_K/256"] = (GgmlType.Q6_K, Q6_KTiles256.Instance, Q6_KTiles256.Supported, "AVX2 and FMA"),
    };

    public static TheoryData<string> TiledKernels() => new(Kernels.Keys);

    static (GgmlType Type, TileKernel Kernel) KernelOf(string name)
    {
        var (type, kernel, runs, needs) = Kernels[name];
        Assert.SkipUnless(runs, $"the {name} tile kernel needs {needs}, which this CPU lacks");
        return (type, kernel);
    }

    /// <summary>
    /// Each format computes with the widest tile kernel the CPU runs (and the row dots without one),
    /// except Q6_K's 512-bit one and Q4_0's pair kernel, taken only where they are preferred
    /// (<see cref="Q6_KTiles.Preferred"/>, <see cref="Q4_0Tiles.Preferred"/>).
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void FormatsTakeTheirWidestKernel(GgmlType type)
    {
        var widest = Kernels.Values.Where(k => k.Type == type && k.Runs && (k.Kernel != Q6_KTiles.Instance || Q6_KTiles.Preferred)
            && (k.Kernel != Q4_0Tiles.Instance || Q4_0Tiles.Preferred)).Select(k => k.Kernel).FirstOrDefault();
        Assert.Same(widest, TypeTraits.Of(type).Tiles);
    }

    static int BlockOf(GgmlType type) => GgmlTypeInfo.Geometry(type).BlockSize;

    /// <summary>Packs <paramref name="n"/> activation rows the way <see cref="CpuBackend"/> does.</summary>
    static byte[] Pack(TileKernel kernel, float[] x, int n, int cols)
    {
        int rowBytes = kernel.PackedRowBytes(cols);
        var packed = new byte[rowBytes * n];
        for (int i = 0; i < n; i++) kernel.Pack(x.AsSpan(i * cols, cols), packed.AsSpan(i * rowBytes, rowBytes));
        return packed;
    }

    /// <summary>
    /// The kernel's outputs for <paramref name="n"/> activation rows; the outputs the next activation
    /// rows would have (where a kernel that ran past its last row would write) must stay as they were.
    /// </summary>
    static float[] Compute(TileKernel kernel, TestWeightRows w, byte[] packed, int n, int cols)
    {
        const float untouched = -12345.5f;
        var y = new float[(n + 4) * w.Rows];
        y.AsSpan(n * w.Rows).Fill(untouched);
        fixed (byte* pw = w.Bytes)
        fixed (byte* pa = packed)
        fixed (float* py = y)
            kernel.Compute(pw, w.RowBytes, w.Rows, pa, kernel.PackedRowBytes(cols), n, cols, py, w.Rows);
        Assert.All(y.AsSpan(n * w.Rows).ToArray(), v => Assert.Equal(untouched, v));
        return y[..(n * w.Rows)];
    }

    /// <summary>
    /// Every output of every tile shape equals the scalar mirror of the kernel's arithmetic bit
    /// for bit: weight rows 1..9 (full tiles of 4, and 1..3 left over), activation rows 1..70.
    /// Real weight scales (~1e-2, subnormal half sub-scales for K-quants) and outliers.
    /// </summary>
    [Theory]
    [MemberData(nameof(TiledKernels))]
    public void EveryOutputEqualsScalarReferenceBitForBit(string name)
    {
        var (type, kernel) = KernelOf(name);
        // 19 and 9 blocks: the one-row kernels take blocks eight at a time, then the rest one by one.
        int cols = BlockOf(type) == 32 ? 32 * 19 : 256 * 9;
        foreach (int rows in new[] { 1, 2, 3, 4, 5, 6, 7, 9 })
        {
            int n = rows == 9 ? 70 : rows + 2;
            CheckAgainstReference(kernel, new TestWeightRows(type, rows, cols, seed: rows, scale: 0.02f), TestRows.WithOutliers(n * cols, 40 + rows), n, cols);
        }
    }

    /// <summary>Every output of <paramref name="n"/> activation rows against <paramref name="w"/> equals the kernel's scalar reference bit for bit.</summary>
    static void CheckAgainstReference(TileKernel kernel, TestWeightRows w, float[] x, int n, int cols)
    {
        var packed = Pack(kernel, x, n, cols);
        var y = Compute(kernel, w, packed, n, cols);
        int rowBytes = kernel.PackedRowBytes(cols);
        for (int i = 0; i < n; i++)
            for (int r = 0; r < w.Rows; r++)
            {
                float expected = kernel.ReferenceDot(w.Row(r), packed.AsSpan(i * rowBytes, rowBytes), cols);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[i * w.Rows + r]),
                    $"{w.Type} rows {w.Rows} n {n}: y[{i},{r}] = {y[i * w.Rows + r]}, reference {expected}");
            }
    }

    /// <summary>
    /// A matrix far bigger than one L2 panel of weight rows (the AVX2 K-quant kernels take panels of
    /// 256 KB: here three and a part) against six activation rows (a group of four, then two): every
    /// output equals the scalar reference bit for bit, so no panel or group is skipped, repeated or
    /// written to another row's place.
    /// </summary>
    [Theory]
    [MemberData(nameof(TiledKernels))]
    public void ManyWeightRowsInPanelsEqualScalarReference(string name)
    {
        var (type, kernel) = KernelOf(name);
        int cols = BlockOf(type) == 32 ? 32 * 72 : 256 * 9;
        int rows = (int)(3.5 * (256 * 1024) / GgmlTypeInfo.RowBytes(type, cols));
        const int n = 6;
        CheckAgainstReference(kernel, new TestWeightRows(type, rows, cols, seed: 3, scale: 0.02f), TestRows.WithOutliers(n * cols, 12), n, cols);
    }

    /// <summary>
    /// An output does not depend on how many activation rows share the call (n = 1..70) nor on
    /// where its row falls in a tile: the last row computed alone equals it computed with the rest.
    /// </summary>
    [Theory]
    [MemberData(nameof(TiledKernels))]
    public void OutputsDoNotDependOnRowCount(string name)
    {
        var (type, kernel) = KernelOf(name);
        int cols = BlockOf(type) == 32 ? 32 * 13 : 256 * 9;
        const int rows = 11;
        var w = new TestWeightRows(type, rows, cols, seed: 5, scale: 0.02f);
        var x = TestRows.Gaussian(70 * cols, 6);
        var all = Compute(kernel, w, Pack(kernel, x, 70, cols), 70, cols);
        for (int n = 1; n <= 70; n++)
        {
            var y = Compute(kernel, w, Pack(kernel, x, n, cols), n, cols);
            Assert.Equal(all.AsSpan(0, n * rows).ToArray(), y);
        }
    }

    /// <summary>
    /// With unit scales every partial sum is an integer below 2^24, so the kernel, its scalar
    /// mirror and the format's scalar row dot must all give the exact dot of the integers.
    /// </summary>
    [Theory]
    [MemberData(nameof(TiledKernels))]
    public void UnitScalesGiveTheExactIntegerDot(string name)
    {
        var (type, kernel) = KernelOf(name);
        int cols = BlockOf(type) == 32 ? 32 * 9 : 256 * 9;
        const int rows = 6, n = 5;
        var rng = new Random((int)type + 7);
        var w = TestWeightRows.UnitScaled(type, rows, cols, rng);
        // Activations that quantize with scale exactly 1: integers in [-127, 127] with a ±127 in every block.
        var x = new float[n * cols];
        for (int k = 0; k < x.Length; k++) x[k] = rng.Next(-127, 128);
        for (int k = 0; k < x.Length; k += 32) x[k] = (k / 32 % 2 == 0) ? 127 : -127;
        var packed = Pack(kernel, x, n, cols);
        var y = Compute(kernel, w, packed, n, cols);
        var traits = TypeTraits.Of(type);
        int rowBytes = kernel.PackedRowBytes(cols);
        for (int i = 0; i < n; i++)
        {
            var activation = TestRows.Activation(type, x.AsSpan(i * cols, cols).ToArray());
            // One activation row takes the decode path (Q8_0/Q4_0: |q| times x signed like q), here with -128 weight bytes among the random ones.
            var alone = Compute(kernel, w, packed.AsSpan(i * rowBytes, rowBytes).ToArray(), 1, cols);
            for (int r = 0; r < rows; r++)
            {
                var wr = TestRows.Dequantize(type, w.Row(r).ToArray(), cols);
                double exact = 0;
                for (int k = 0; k < cols; k++) exact += (double)wr[k] * x[i * cols + k];
                Assert.Equal((float)exact, y[i * rows + r]);
                Assert.Equal((float)exact, alone[r]);
                Assert.Equal((float)exact, kernel.ReferenceDot(w.Row(r), packed.AsSpan(i * rowBytes, rowBytes), cols));
                Assert.Equal((float)exact, traits.Dot(w.Row(r), activation, cols));
            }
        }
    }

    /// <summary>With real scales the tiled result and the row dot differ only in float summation order.</summary>
    [Theory]
    [MemberData(nameof(TiledKernels))]
    public void AgreesWithRowDot(string name)
    {
        var (type, kernel) = KernelOf(name);
        int cols = BlockOf(type) == 32 ? 32 * 33 : 256 * 5;
        const int rows = 7, n = 6;
        var w = new TestWeightRows(type, rows, cols, seed: 9, scale: 0.02f);
        var x = TestRows.WithOutliers(n * cols, 10);
        var y = Compute(kernel, w, Pack(kernel, x, n, cols), n, cols);
        var traits = TypeTraits.Of(type);
        for (int i = 0; i < n; i++)
        {
            var activation = TestRows.Activation(type, x.AsSpan(i * cols, cols).ToArray());
            var xf = TestRows.DequantizeActivation(type, activation, cols);
            for (int r = 0; r < rows; r++)
            {
                var wf = TestRows.Dequantize(type, w.Row(r).ToArray(), cols);
                double magnitude = 0;
                for (int k = 0; k < cols; k++) magnitude += Math.Abs((double)wf[k] * xf[k]);
                float dot = traits.Dot(w.Row(r), activation, cols);
                Assert.True(Math.Abs(dot - y[i * rows + r]) <= 1e-6 * magnitude, $"{type} y[{i},{r}] = {y[i * rows + r]}, row dot {dot}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(TiledKernels))]
    public void PackedActivationsHoldTheRowDotsQuantizedValues(string name)
    {
        var (type, kernel) = KernelOf(name);
        int cols = BlockOf(type) == 32 ? 32 * 4 : 256 * 2;
        var x = TestRows.WithOutliers(cols, 11);
        var packed = Pack(kernel, x, 1, cols);
        var activation = TestRows.Activation(type, x);
        var expected = TestRows.DequantizeActivation(type, activation, cols);
        Assert.Equal(expected, kernel.UnpackActivation(packed, cols));
    }
}

/// <summary>Quantized weight rows in a managed array (the tile kernels take pointers; tests pin it).</summary>
public sealed class TestWeightRows
{
    public TestWeightRows(GgmlType type, int rows, int cols, int seed, float scale)
    {
        Type = type;
        Rows = rows;
        RowBytes = (int)GgmlTypeInfo.RowBytes(type, cols);
        Bytes = new byte[RowBytes * rows];
        for (int r = 0; r < rows; r++)
        {
            var values = TestRows.WithOutliers(cols, seed * 1000 + r);
            for (int k = 0; k < cols; k++) values[k] *= scale;
            WeightFormats.QuantizeRow(type, values, Row(r));
        }
    }

    TestWeightRows(GgmlType type, int rows, int rowBytes)
    {
        Type = type;
        Rows = rows;
        RowBytes = rowBytes;
        Bytes = new byte[rowBytes * rows];
    }

    public GgmlType Type { get; }
    public int Rows { get; }
    public int RowBytes { get; }
    public byte[] Bytes { get; }

    public Span<byte> Row(int r) => Bytes.AsSpan(r * RowBytes, RowBytes);

    /// <summary>Random bytes with every (super-)block scale 1, so dots are exact integers.</summary>
    public static TestWeightRows UnitScaled(GgmlType type, int rows, int cols, Random rng)
    {
        var w = new TestWeightRows(type, rows, (int)GgmlTypeInfo.RowBytes(type, cols));
        rng.NextBytes(w.Bytes);
        var geometry = GgmlTypeInfo.Geometry(type);
        ushort one = BitConverter.HalfToUInt16Bits((Half)1);
        for (int b = 0; b < w.Bytes.Length; b += geometry.TypeSize)
        {
            if (type == GgmlType.Q6_K)
            {
                // d is last; the 16 int8 group scales stay small (-4..4) so every partial sum stays below 2^24.
                BitConverter.TryWriteBytes(w.Bytes.AsSpan(b + 208), one);
                for (int g = 0; g < 16; g++) w.Bytes[b + 192 + g] = (byte)(sbyte)rng.Next(-4, 5);
                continue;
            }
            BitConverter.TryWriteBytes(w.Bytes.AsSpan(b), one);
            if (type == GgmlType.Q4_K) BitConverter.TryWriteBytes(w.Bytes.AsSpan(b + 2), one);
        }
        return w;
    }
}
