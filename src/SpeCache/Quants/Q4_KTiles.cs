using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Q4_K weights against Q8_K activations (packed rows are plain <see cref="BlockQ8_K"/> rows).
/// Per output and 256-value block: for each 32-value sub-block, u8 nibbles × s8 activations
/// summed in pairs (at most 2·15·127, no saturation), then multiplied by the 6-bit sub-block
/// scale and added in 32-bit lanes with one VNNI word instruction; the eight exact lane sums
/// go to float with one multiply-add by (d × activation scale). The mins take a second float
/// accumulator, fed once per block from the activation's group sums.
/// A weight tile's scales, mins and super-block scales are unpacked once per tile into a small
/// table, so the activation tiles that pass over it only broadcast them.
/// </summary>
internal sealed unsafe class Q4_KTiles : TileKernel
{
    public static readonly Q4_KTiles Instance = new();

    /// <summary>Bytes per weight block in the unpacked table: 8 int mins, 8 short scales, d, dmin.</summary>
    const int MetaBytes = 64;
    const int MaxStackMeta = 64 * 1024;

    public override int PackedRowBytes(int cols) => CacheLines((long)cols / Q8_K.BlockSize * Q8_K.BlockBytes);

    public override void Pack(ReadOnlySpan<float> x, Span<byte> packed) => Q8_K.QuantizeActivationRow(x, packed);

    public override float[] UnpackActivation(ReadOnlySpan<byte> packed, int cols)
    {
        var x = new float[cols];
        Q8_K.DequantizeRow(packed, x);
        return x;
    }

    public override void Compute(byte* w, long weightRowBytes, int rows, byte* a, int packedRowBytes, int n, int cols, float* y, long yStride)
    {
        int nb = cols / Q4_K.BlockSize;
        int metaBytes = 4 * nb * MetaBytes;
        byte[]? heap = metaBytes > MaxStackMeta ? new byte[metaBytes] : null;
        Span<byte> metaSpan = heap ?? stackalloc byte[metaBytes];
        fixed (byte* meta = metaSpan)
            for (int r0 = 0; r0 < rows; r0 += 4)
            {
                int m = Math.Min(4, rows - r0);
                byte* wt = w + r0 * weightRowBytes;
                for (int i = 0; i < m; i++)
                    for (int b = 0; b < nb; b++)
                        UnpackMeta(wt + i * weightRowBytes + (long)b * Q4_K.BlockBytes, meta + (i * nb + b) * MetaBytes);
                for (int i0 = 0; i0 < n; i0 += 4)
                {
                    byte* at = a + (long)i0 * packedRowBytes;
                    float* yt = y + i0 * yStride + r0;
                    switch (Math.Min(4, n - i0))
                    {
                        case 4: Rows<Extent4>(m, wt, weightRowBytes, meta, nb, at, packedRowBytes, yt, yStride); break;
                        case 3: Rows<Extent3>(m, wt, weightRowBytes, meta, nb, at, packedRowBytes, yt, yStride); break;
                        case 2: Rows<Extent2>(m, wt, weightRowBytes, meta, nb, at, packedRowBytes, yt, yStride); break;
                        default: Rows<Extent1>(m, wt, weightRowBytes, meta, nb, at, packedRowBytes, yt, yStride); break;
                    }
                }
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void UnpackMeta(byte* block, byte* meta)
    {
        Q4_K.Unpack(block + 4, out ulong sc, out ulong mins);
        Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte()).Store((int*)meta);
        Sse41.ConvertToVector128Int16(Vector128.CreateScalar(sc).AsByte()).Store((short*)(meta + 32));
        *(float*)(meta + 48) = QuantMath.ToFloat(*(ushort*)block);
        *(float*)(meta + 52) = QuantMath.ToFloat(*(ushort*)(block + 2));
    }

    static void Rows<TN>(int m, byte* w, long ws, byte* meta, int nb, byte* a, int aStride, float* y, long yStride) where TN : struct, ITileExtent
    {
        switch (m)
        {
            case 4: Tile<Extent4, TN>(w, ws, meta, nb, a, aStride, y, yStride); break;
            case 3: Tile<Extent3, TN>(w, ws, meta, nb, a, aStride, y, yStride); break;
            case 2: Tile<Extent2, TN>(w, ws, meta, nb, a, aStride, y, yStride); break;
            default: Tile<Extent1, TN>(w, ws, meta, nb, a, aStride, y, yStride); break;
        }
    }

    /// <summary>
    /// TM weight rows × TN activation rows. The integer accumulators sIJ (weight row I,
    /// activation row J) live for one block in registers; the float ones, touched once per
    /// block, live in a small stack table.
    /// </summary>
    static void Tile<TM, TN>(byte* w, long ws, byte* meta, int nb, byte* a, int aStride, float* y, long yStride)
        where TM : struct, ITileExtent where TN : struct, ITileExtent
    {
        var acc = stackalloc Vector256<float>[32]; // [I * 4 + J] scaled sums, [16 + I * 4 + J] mins
        for (int k = 0; k < 32; k++) acc[k] = default;
        long metaRow = (long)nb * MetaBytes;
        var mask = Vector256.Create((byte)0x0F);
        for (int b = 0; b < nb; b++)
        {
            Vector256<int> s00 = default, s10 = default, s20 = default, s30 = default;
            Vector256<int> s01 = default, s11 = default, s21 = default, s31 = default;
            Vector256<int> s02 = default, s12 = default, s22 = default, s32 = default;
            Vector256<int> s03 = default, s13 = default, s23 = default, s33 = default;
            byte* qs = w + (long)b * Q4_K.BlockBytes + 16;
            short* sc = (short*)(meta + b * MetaBytes + 32);
            byte* x = a + (long)b * Q8_K.BlockBytes + 4;
            for (int c = 0; c < 4; c++)
            {
                var v0 = Vector256.Load(qs + 32 * c);
                var v1 = TM.Value > 1 ? Vector256.Load(qs + ws + 32 * c) : default;
                var v2 = TM.Value > 2 ? Vector256.Load(qs + 2 * ws + 32 * c) : default;
                var v3 = TM.Value > 3 ? Vector256.Load(qs + 3 * ws + 32 * c) : default;
                for (int half = 0; half < 2; half++)
                {
                    // Chunk c's low nibbles are sub-block 2c, its high nibbles sub-block 2c + 1.
                    int sub = 2 * c + half;
                    var n0 = v0 & mask;
                    var n1 = TM.Value > 1 ? v1 & mask : default;
                    var n2 = TM.Value > 2 ? v2 & mask : default;
                    var n3 = TM.Value > 3 ? v3 & mask : default;
                    var k0 = Vector256.Create(sc[sub]);
                    var k1 = TM.Value > 1 ? Vector256.Create(sc[metaRow / 2 + sub]) : default;
                    var k2 = TM.Value > 2 ? Vector256.Create(sc[metaRow + sub]) : default;
                    var k3 = TM.Value > 3 ? Vector256.Create(sc[3 * metaRow / 2 + sub]) : default;
                    int offset = 32 * sub;
                    SubBlock<TM>(x + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s00, ref s10, ref s20, ref s30);
                    if (TN.Value > 1) SubBlock<TM>(x + aStride + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s01, ref s11, ref s21, ref s31);
                    if (TN.Value > 2) SubBlock<TM>(x + 2 * aStride + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s02, ref s12, ref s22, ref s32);
                    if (TN.Value > 3) SubBlock<TM>(x + 3 * aStride + offset, n0, n1, n2, n3, k0, k1, k2, k3, ref s03, ref s13, ref s23, ref s33);
                    v0 = Vector256.ShiftRightLogical(v0.AsUInt16(), 4).AsByte();
                    if (TM.Value > 1) v1 = Vector256.ShiftRightLogical(v1.AsUInt16(), 4).AsByte();
                    if (TM.Value > 2) v2 = Vector256.ShiftRightLogical(v2.AsUInt16(), 4).AsByte();
                    if (TM.Value > 3) v3 = Vector256.ShiftRightLogical(v3.AsUInt16(), 4).AsByte();
                }
            }
            byte* mb = meta + b * MetaBytes;
            Finish<TM>(x, mb, metaRow, acc, s00, s10, s20, s30);
            if (TN.Value > 1) Finish<TM>(x + aStride, mb, metaRow, acc + 1, s01, s11, s21, s31);
            if (TN.Value > 2) Finish<TM>(x + 2 * aStride, mb, metaRow, acc + 2, s02, s12, s22, s32);
            if (TN.Value > 3) Finish<TM>(x + 3 * aStride, mb, metaRow, acc + 3, s03, s13, s23, s33);
        }
        for (int j = 0; j < TN.Value; j++)
            for (int i = 0; i < TM.Value; i++)
                y[j * yStride + i] = HorizontalSum(acc[i * 4 + j]) - HorizontalSum(acc[16 + i * 4 + j]);
    }

    /// <summary>One activation sub-block (32 values at <paramref name="x"/>) against the tile's nibbles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SubBlock<TM>(byte* x, Vector256<byte> n0, Vector256<byte> n1, Vector256<byte> n2, Vector256<byte> n3,
        Vector256<short> k0, Vector256<short> k1, Vector256<short> k2, Vector256<short> k3,
        ref Vector256<int> s0, ref Vector256<int> s1, ref Vector256<int> s2, ref Vector256<int> s3) where TM : struct, ITileExtent
    {
        var q = Vector256.Load((sbyte*)x);
        s0 = AvxVnni.MultiplyWideningAndAdd(s0, Avx2.MultiplyAddAdjacent(n0, q), k0);
        if (TM.Value > 1) s1 = AvxVnni.MultiplyWideningAndAdd(s1, Avx2.MultiplyAddAdjacent(n1, q), k1);
        if (TM.Value > 2) s2 = AvxVnni.MultiplyWideningAndAdd(s2, Avx2.MultiplyAddAdjacent(n2, q), k2);
        if (TM.Value > 3) s3 = AvxVnni.MultiplyWideningAndAdd(s3, Avx2.MultiplyAddAdjacent(n3, q), k3);
    }

    /// <summary>End of a block for one activation row (its quants at <paramref name="x"/>): scale the integer sums and add the mins.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish<TM>(byte* x, byte* meta, long metaRow, Vector256<float>* acc,
        Vector256<int> s0, Vector256<int> s1, Vector256<int> s2, Vector256<int> s3) where TM : struct, ITileExtent
    {
        float dx = *(float*)(x - 4);
        // Sums of each 32 activations, from the 16-value group sums.
        var groups = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + 256)), Vector256<short>.One);
        Row(acc, meta, dx, groups, s0);
        if (TM.Value > 1) Row(acc + 4, meta + metaRow, dx, groups, s1);
        if (TM.Value > 2) Row(acc + 8, meta + 2 * metaRow, dx, groups, s2);
        if (TM.Value > 3) Row(acc + 12, meta + 3 * metaRow, dx, groups, s3);

        static void Row(Vector256<float>* acc, byte* meta, float dx, Vector256<int> groups, Vector256<int> s)
        {
            acc[0] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), Vector256.Create(*(float*)(meta + 48) * dx), acc[0]);
            var mins = Vector256.Load((int*)meta) * groups;
            acc[16] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(mins), Vector256.Create(*(float*)(meta + 52) * dx), acc[16]);
        }
    }

    public override float ReferenceDot(ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> packedRow, int cols)
    {
        int nb = cols / Q4_K.BlockSize;
        Span<float> acc = stackalloc float[8];
        Span<float> minAcc = stackalloc float[8];
        acc.Clear();
        minAcc.Clear();
        fixed (byte* w = weightRow)
        fixed (byte* x = packedRow)
            for (int b = 0; b < nb; b++)
            {
                byte* wb = w + b * Q4_K.BlockBytes;
                byte* xb = x + b * Q8_K.BlockBytes;
                float dx = *(float*)xb;
                sbyte* q8 = (sbyte*)(xb + 4);
                short* groups = (short*)(xb + 260);
                float d = QuantMath.ToFloat(*(ushort*)wb) * dx, dmin = QuantMath.ToFloat(*(ushort*)(wb + 2)) * dx;
                for (int l = 0; l < 8; l++)
                {
                    int sum = 0;
                    for (int sub = 0; sub < 8; sub++)
                    {
                        Q4_K.ScaleMin(sub, wb + 4, out int sc, out _);
                        int part = 0;
                        for (int v = 32 * sub + 4 * l; v < 32 * sub + 4 * l + 4; v++)
                            part += ((wb[16 + 32 * (sub / 2) + v % 32] >> (4 * (sub & 1))) & 0xF) * q8[v];
                        sum += sc * part;
                    }
                    Q4_K.ScaleMin(l, wb + 4, out _, out int m);
                    acc[l] = MathF.FusedMultiplyAdd(sum, d, acc[l]);
                    minAcc[l] = MathF.FusedMultiplyAdd(m * (groups[2 * l] + groups[2 * l + 1]), dmin, minAcc[l]);
                }
            }
        return HorizontalSum(acc) - HorizontalSum(minAcc);
    }
}
