using SpeCache.Quants;

namespace SpeCache.Tests.Quants;

public unsafe class FloatTilesTests
{
    /// <summary>
    /// The float tiles give every output the row dot's bits (<see cref="F16.Dot"/>, <see cref="BF16.Dot"/>,
    /// F32's <see cref="F32Tiles.RowDot"/>; 512- or 256-bit as the CPU runs them): weight rows 1..9 (whole
    /// tiles and 1-3 left over), activation rows 1 to 21 (up to <see cref="FloatActivationTiles.InPlaceRows"/>
    /// dotted with the weights in place, more through the converted table for the 16-bit floats, or
    /// on AVX2 their two-row dots; tiles of 1-4 activation rows), columns
    /// with and without the 16-column (and, at 256 bits, 8-column) step and the one-by-one tail. F16
    /// also through the scaled kernel the backend takes for finite weights (activations packed times
    /// 2^112, halves read 2^-112 times their value), which must give the exact dot's bits too.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F16, 53)]
    [InlineData(GgmlType.F16, 2067)]
    [InlineData(GgmlType.F16, 64)]
    [InlineData(GgmlType.F16, 53, true)]
    [InlineData(GgmlType.F16, 2067, true)]
    [InlineData(GgmlType.BF16, 53)]
    [InlineData(GgmlType.BF16, 101)]
    [InlineData(GgmlType.F32, 53)]
    [InlineData(GgmlType.F32, 61)]
    [InlineData(GgmlType.F32, 2067)]
    public void EveryOutputIsTheRowDotsBits(GgmlType type, int cols, bool scaled = false)
    {
        Assert.SkipUnless(type == GgmlType.F32 ? F32Tiles.Supported : HalfTiles<ExactHalves>.Supported, "the float tiles need AVX2 and FMA");
        TileKernel kernel = type switch
        {
            GgmlType.F16 when scaled => HalfTiles<ScaledHalves>.Instance,
            GgmlType.F16 => HalfTiles<ExactHalves>.Instance,
            GgmlType.BF16 => HalfTiles<BFloat16s>.Instance,
            _ => F32Tiles.Instance,
        };
        for (int rows = 1; rows <= 9; rows++)
        {
            var w = new TestWeightRows(type, rows, cols, seed: rows, scale: 0.02f);
            if (scaled) Assert.False(F16.AnyInfinityOrNaN(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(w.Bytes)));
            foreach (int n in (int[])[1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 21])
            {
                var x = TestRows.WithOutliers(n * cols, 40 + n);
                int rowBytes = kernel.PackedRowBytes(cols);
                var packed = new byte[rowBytes * n];
                for (int i = 0; i < n; i++) kernel.Pack(x.AsSpan(i * cols, cols), packed.AsSpan(i * rowBytes, rowBytes));
                var y = new float[(n + 1) * rows];
                y.AsSpan(n * rows).Fill(-7.5f);
                fixed (byte* pw = w.Bytes)
                fixed (byte* pa = packed)
                fixed (float* py = y)
                    kernel.Compute(pw, w.RowBytes, rows, pa, rowBytes, n, cols, py, rows);
                Assert.All(y.AsSpan(n * rows).ToArray(), v => Assert.Equal(-7.5f, v));
                for (int i = 0; i < n; i++)
                    for (int r = 0; r < rows; r++)
                    {
                        var xi = System.Runtime.InteropServices.MemoryMarshal.AsBytes(x.AsSpan(i * cols, cols));
                        float expected = TypeTraits.Of(type).Dot(w.Row(r), xi, cols);
                        Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(y[i * rows + r]),
                            $"{type}{(scaled ? " scaled" : "")} cols {cols}, {rows} weight rows, {n} activation rows: y[{i},{r}] = {y[i * rows + r]}, row dot {expected}");
                    }
            }
        }
    }
}
