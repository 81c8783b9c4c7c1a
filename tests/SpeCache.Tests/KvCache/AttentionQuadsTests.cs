using System.Runtime.Intrinsics;
using SpeCache.KvCache;
using SpeCache.Quants;
using SpeCache.Tests.KvCache.Quantization;

namespace SpeCache.Tests.KvCache;

/// <summary>
/// The four-head attention kernels at each vector width, on float keys and values and on halves
/// read in place (the queries and weights scaled by 2^112 to match), against sums in doubles.
/// </summary>
public unsafe class AttentionQuadsTests
{
    /// <summary>Widths, head sizes (whole 64s, a 16 or 8 left over) and element types.</summary>
    public static TheoryData<int, int, bool> Shapes => new()
    {
        { 512, 64, false }, { 512, 80, true }, { 512, 128, true }, { 512, 16, false },
        { 256, 64, true }, { 256, 64, false }, { 256, 24, true }, { 256, 8, false },
        { 0, 64, true }, { 0, 8, false },
    };

    static void SkipUnlessRuns(int bits) =>
        Assert.SkipUnless(bits switch { 512 => Vector512.IsHardwareAccelerated, 256 => Vector256.IsHardwareAccelerated, _ => true },
            $"the {bits}-bit kernels need {bits}-bit vectors, which this CPU lacks");

    /// <summary>
    /// Scores of four heads against 1 to 67 keys (the two-position pass and the one left over, a
    /// tile and past it), each key inside a wider row's stride, stored into strided score rows.
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void ScoresMatchDoubleSums(int bits, int d, bool halves)
    {
        SkipUnlessRuns(bits);
        var rng = new Random(d * 7 + bits);
        foreach (int n in new[] { 1, 2, 3, 64, 67 })
        {
            var q = KiviTestData.Normals(rng, 4, d);
            var k = KiviTestData.Normals(rng, n, d);
            var (kBytes, kValues) = Encode(k, halves);
            var qUsed = halves ? q.Select(x => x * QuantMath.HalfRebias).ToArray() : q;
            const int sStride = 70;
            var s = new float[4 * sStride];
            float scale = 0.125f;
            fixed (float* pq = qUsed)
            fixed (byte* pk = kBytes)
            fixed (float* ps = s)
            {
                if (halves) AttentionQuads.Scores<ScaledHalfElement>(bits, pq, pk, n, d, scale, ps, sStride);
                else AttentionQuads.Scores<SingleElement>(bits, pq, pk, n, d, scale, ps, sStride);
            }
            for (int r = 0; r < 4; r++)
                for (int t = 0; t < sStride; t++)
                {
                    if (t >= n)
                    {
                        Assert.True(s[r * sStride + t] == 0, $"score {t} of head {r} past the {n} keys was written");
                        continue;
                    }
                    double expected = 0;
                    for (int i = 0; i < d; i++) expected += (double)q[r * d + i] * kValues[t * d + i];
                    expected *= scale;
                    Assert.True(Math.Abs(s[r * sStride + t] - expected) <= 1e-5 * (1 + Math.Abs(expected)),
                        $"{bits}-bit, head {d}, halves {halves}, {n} keys: head {r} position {t} scored {s[r * sStride + t]}, expected {expected}");
                }
        }
    }

    /// <summary>Four heads' weighted values of 1 to 67 positions added to outputs already holding values, the values inside a wider stride.</summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void AccumulatedValuesMatchDoubleSums(int bits, int d, bool halves)
    {
        SkipUnlessRuns(bits);
        var rng = new Random(d * 11 + bits);
        foreach (int n in new[] { 1, 2, 3, 64, 67 })
        {
            int stride = d + 8;
            var v = KiviTestData.Normals(rng, n, stride);
            var (vBytes, vValues) = Encode(v, halves);
            const int pStride = 80;
            var p = new float[4 * pStride];
            for (int i = 0; i < p.Length; i++) p[i] = (float)rng.NextDouble();
            p[3] = 0; // a zero weight, which the plain loop skips
            var pUsed = halves ? p.Select(x => x * QuantMath.HalfRebias).ToArray() : p;
            var o = KiviTestData.Normals(rng, 4, d);
            var expected = o.Select(x => (double)x).ToArray();
            for (int r = 0; r < 4; r++)
                for (int t = 0; t < n; t++)
                    for (int i = 0; i < d; i++) expected[r * d + i] += (double)p[r * pStride + t] * vValues[t * stride + i];
            fixed (float* pp = pUsed)
            fixed (byte* pv = vBytes)
            fixed (float* po = o)
            {
                if (halves) AttentionQuads.AccumulateValues<ScaledHalfElement>(bits, pp, pStride, pv, stride, n, po, d);
                else AttentionQuads.AccumulateValues<SingleElement>(bits, pp, pStride, pv, stride, n, po, d);
            }
            for (int i = 0; i < o.Length; i++)
                Assert.True(Math.Abs(o[i] - expected[i]) <= 1e-5 * (1 + Math.Abs(expected[i])),
                    $"{bits}-bit, head {d}, halves {halves}, {n} positions: output {i} is {o[i]}, expected {expected[i]}");
        }
    }

    /// <summary>
    /// Every finite half read in place (scalar, 256 and 512 bits), times 2^112, is exactly
    /// (float)Half: normals, subnormals and both zeros, in every lane.
    /// </summary>
    [Fact]
    public void HalvesReadInPlaceAreTheirValueOver2To112()
    {
        var bits = new ushort[16];
        for (int h = 0; h < 65536; h++)
        {
            if ((h & 0x7C00) == 0x7C00) continue; // infinities and NaNs are not read in place
            for (int lane = 0; lane < 16; lane++) bits[lane] = (ushort)(lane == h % 16 ? h : 0x3C00 + lane);
            fixed (ushort* b = bits)
            {
                var wide = Vector512.IsHardwareAccelerated ? ScaledHalfElement.Load512((byte*)b) : default;
                var narrow = Vector256.IsHardwareAccelerated ? ScaledHalfElement.Load256((byte*)b) : default;
                for (int lane = 0; lane < 16; lane++)
                {
                    uint expected = BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf(bits[lane]));
                    Assert.Equal(expected, BitConverter.SingleToUInt32Bits(ScaledHalfElement.Load((byte*)(b + lane)) * QuantMath.HalfRebias));
                    if (Vector512.IsHardwareAccelerated)
                        Assert.Equal(expected, BitConverter.SingleToUInt32Bits(wide[lane] * QuantMath.HalfRebias));
                    if (Vector256.IsHardwareAccelerated && lane < 8)
                        Assert.Equal(expected, BitConverter.SingleToUInt32Bits(narrow[lane] * QuantMath.HalfRebias));
                }
            }
        }
    }

    /// <summary>The keys or values as the kernel reads them (floats or halves) and the values those bytes stand for.</summary>
    static (byte[] Bytes, double[] Values) Encode(float[] x, bool halves)
    {
        if (!halves) return (x.SelectMany(BitConverter.GetBytes).ToArray(), x.Select(v => (double)v).ToArray());
        var h = x.Select(v => (Half)v).ToArray();
        return (h.SelectMany(BitConverter.GetBytes).ToArray(), h.Select(v => (double)(float)v).ToArray());
    }
}
