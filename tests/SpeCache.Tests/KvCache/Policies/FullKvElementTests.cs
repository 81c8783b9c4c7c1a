using System.Runtime.InteropServices;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.Tests.KvCache.Quantization;
using static SpeCache.Tests.KvCache.Policies.EvictionTestShapes;

namespace SpeCache.Tests.KvCache.Policies;

/// <summary>The full cache's element types (llama.cpp's cache types): encoding, attention, generation.</summary>
public unsafe class FullKvElementTests
{
    /// <summary>
    /// The worst error one value may get, from how each format rounds: F16 and BF16 round to
    /// nearest (half an ulp: 2^-11 and 2^-8 relative, F16 subnormals 2^-25 absolute); Q8_0 rounds
    /// x/d to an integer with d = amax/127 (d/2), and d itself is stored as F16 (127 steps times
    /// the half's rounding, which is absolute 2^-25 once d is subnormal: blocks with amax below ~8e-3);
    /// Q4_0 maps -amax..amax onto -8..7 steps of d = amax/8, so the value opposite the block's
    /// extreme is clamped from 8 to 7 steps (d), plus 8 steps times the scale's rounding.
    /// </summary>
    static float Bound(FullKvElement element, float x, float blockAbsMax)
    {
        const float slack = 1.0001f; // float arithmetic in the quantizers themselves
        return element switch
        {
            FullKvElement.F32 => 0,
            FullKvElement.F16 => HalfRounding(x),
            FullKvElement.BF16 => MathF.Abs(x) * MathF.Pow(2, -8),
            FullKvElement.Q8_0 => (blockAbsMax / 127 / 2 + 127 * HalfRounding(blockAbsMax / 127)) * slack,
            FullKvElement.Q4_0 => (blockAbsMax / 8 + 8 * HalfRounding(blockAbsMax / 8)) * slack,
            _ => throw new ArgumentException(element.ToString()),
        };

        static float HalfRounding(float v) => MathF.Max(MathF.Abs(v) * MathF.Pow(2, -11), MathF.Pow(2, -25));
    }

    public static TheoryData<FullKvElement> Elements => new(Enum.GetValues<FullKvElement>());

    [Theory]
    [MemberData(nameof(Elements))]
    public void RoundTripStaysWithinTheFormatsRounding(FullKvElement element)
    {
        const int kvDim = 128, rows = 64;
        var rng = new Random(11);
        var x = KiviTestData.Normals(rng, rows, kvDim);
        // Some rows of very different scale, and one with an outlier per block.
        for (int i = 0; i < kvDim; i++) { x[i] *= 1e-3f; x[kvDim + i] *= 300; }
        for (int b = 0; b < kvDim / 32; b++) x[2 * kvDim + b * 32 + 5] = 40;
        var encoded = new byte[rows * FullKvCache.RowBytes(element, kvDim)];
        var decoded = new float[x.Length];
        FullKvCache.Encode(element, x, encoded);
        FullKvCache.Decode(element, encoded, decoded);
        double worstRatio = 0;
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = MathF.Max(amax, MathF.Abs(x[b * 32 + i]));
            for (int i = b * 32; i < b * 32 + 32; i++)
            {
                float error = MathF.Abs(decoded[i] - x[i]), bound = Bound(element, x[i], amax);
                Assert.True(error <= bound, $"{element}: value {i} = {x[i]} decoded as {decoded[i]}, error {error} > bound {bound}");
                if (bound > 0) worstRatio = Math.Max(worstRatio, error / bound);
            }
        }
        TestContext.Current.TestOutputHelper?.WriteLine($"{element}: worst error {worstRatio:P0} of its bound");
    }

    [Theory]
    [InlineData(FullKvElement.F16, 64 * 2)]
    [InlineData(FullKvElement.BF16, 64 * 2)]
    [InlineData(FullKvElement.F32, 64 * 4)]
    [InlineData(FullKvElement.Q8_0, 2 * 34)]
    [InlineData(FullKvElement.Q4_0, 2 * 18)]
    public void MemoryIsExactForEachType(FullKvElement element, int rowBytes)
    {
        var c = Shape(kvHeads: 4, group: 2, headDim: 16, layers: 2); // tinystories-656k's KV shape
        Assert.Equal(rowBytes, FullKvCache.RowBytes(element, c.KvDim));
        using var cache = new FullKvCache(c, 300, element);
        Assert.Equal(2L * 2 * 300 * rowBytes, cache.Memory.FastTierBytes);
        Assert.Equal(2L * 2 * rowBytes, KvCacheFactory.FastTierBytesPerToken(new KvCacheOptions { FullElement = element }, c));
    }

    [Fact]
    public void BlockTypesNeedRowsOfWholeBlocks()
    {
        var c = Shape(kvHeads: 1, group: 1, headDim: 16);
        var e = Assert.Throws<NotSupportedException>(() => new FullKvCache(c, 10, FullKvElement.Q4_0));
        Assert.Equal("a q4_0 cache needs KV rows of a multiple of 32 values (this model's are 16)", e.Message);
    }

    [Fact]
    public void TypesParseByLlamaCppNames()
    {
        Assert.Equal(FullKvElement.Q8_0, FullKvCache.Parse("q8_0"));
        Assert.Equal(FullKvElement.BF16, FullKvCache.Parse("BF16"));
        var e = Assert.Throws<ArgumentException>(() => FullKvCache.Parse("q5_1"));
        Assert.Equal("unknown KV cache type 'q5_1' (available: f16, f32, bf16, q8_0, q4_0)", e.Message);
    }

    /// <summary>
    /// A cache of type T attends exactly over the decoded keys K' and values V'. Against the F32
    /// cache: V' moves the output, a convex combination of values, by at most max|V' - V|; K'
    /// moves each score by at most D = max|q.(k' - k)|/sqrt(d), which multiplies each softmax weight
    /// by a factor in [e^-2D, e^2D], so the weights move by at most e^2D - 1 in total (L1) and the
    /// output by (e^2D - 1) max|V'|. The test computes D and both maxima from the decoded data and
    /// asserts the sum plus float rounding; prefill chunks and single tokens both go through Attend.
    /// </summary>
    [Theory]
    [MemberData(nameof(Elements))]
    public void AttentionStaysWithinTheBoundFromTheDecodedCache(FullKvElement element)
    {
        var c = Shape(kvHeads: 2, group: 2, headDim: 16); // heads narrower than a block, like the tiny models
        const int capacity = 160;
        using var exact = new FullKvCache(c, capacity, FullKvElement.F32);
        using var cache = new FullKvCache(c, capacity, element);
        var rng = new Random(3);
        var allK = new List<float>();
        var allV = new List<float>();
        double worst = 0, worstBound = 0;
        foreach (int n in new[] { 50, 1, 1, 1, 64, 1, 1 })
        {
            var k = KiviTestData.Normals(rng, n, c.KvDim);
            var v = KiviTestData.Normals(rng, n, c.KvDim);
            var q = KiviTestData.Normals(rng, n, c.QDim);
            allK.AddRange(k);
            allV.AddRange(v);
            var expected = new float[n * c.QDim];
            var actual = new float[n * c.QDim];
            exact.Append(0, k, v, n);
            exact.Attend(0, q, expected, n);
            cache.Append(0, k, v, n);
            cache.Attend(0, q, actual, n);
            exact.Commit(n);
            cache.Commit(n);

            float[] keys = [.. allK], values = [.. allV];
            var rowBytes = FullKvCache.RowBytes(element, c.KvDim);
            var decodedK = new float[keys.Length];
            var decodedV = new float[values.Length];
            var scratch = new byte[keys.Length / c.KvDim * rowBytes];
            FullKvCache.Encode(element, keys, scratch);
            FullKvCache.Decode(element, scratch, decodedK);
            FullKvCache.Encode(element, values, scratch);
            FullKvCache.Decode(element, scratch, decodedV);
            int tokens = keys.Length / c.KvDim;
            for (int i = 0; i < n; i++)
                for (int head = 0; head < c.HeadCount; head++)
                {
                    int kvHead = head / c.QueryGroupSize, visible = tokens - n + i + 1;
                    double d = 0, valueError = 0, valueMax = 0;
                    for (int t = 0; t < visible; t++)
                    {
                        double dot = 0;
                        for (int j = 0; j < c.HeadDim; j++)
                        {
                            int at = t * c.KvDim + kvHead * c.HeadDim + j;
                            dot += q[i * c.QDim + head * c.HeadDim + j] * (decodedK[at] - keys[at]);
                            valueError = Math.Max(valueError, Math.Abs(decodedV[at] - values[at]));
                            valueMax = Math.Max(valueMax, Math.Abs(decodedV[at]));
                        }
                        d = Math.Max(d, Math.Abs(dot) / Math.Sqrt(c.HeadDim));
                    }
                    double bound = (Math.Exp(2 * d) - 1) * valueMax + valueError + 1e-5;
                    for (int j = 0; j < c.HeadDim; j++)
                    {
                        int at = i * c.QDim + head * c.HeadDim + j;
                        double error = Math.Abs(actual[at] - expected[at]);
                        Assert.True(error <= bound, $"{element}: token {tokens - n + i}, head {head}: error {error} > bound {bound}");
                        worst = Math.Max(worst, error);
                        worstBound = Math.Max(worstBound, bound);
                    }
                }
        }
        TestContext.Current.TestOutputHelper?.WriteLine($"{element}: largest attention error {worst:E2} (largest bound {worstBound:E2})");
        if (element == FullKvElement.F32) Assert.Equal(0, worst);
        else Assert.True(worst > 0, $"{element}: identical to F32, so the cache did not store {element}");
    }

    /// <summary>
    /// Greedy text from BOS on tinystories-656k, f16 cache vs type T. Free-running texts part at
    /// the first near-tie and never meet again, so agreement is counted teacher-forced: T's cache
    /// reads f16's 300-token text and predicts each next token, which is compared with f16's.
    /// Measured (the first number is the free-running prefix): q8_0 59 and 298/300, bf16 59 and
    /// 298/300, q4_0 7 and 265/300, f32 300 and 300/300 (q8_0 and bf16 part from f16 at the same
    /// near-tie, token 59). The floors leave a few tokens for summation-order changes.
    /// </summary>
    [Theory]
    [InlineData(FullKvElement.Q8_0, 295)]
    [InlineData(FullKvElement.BF16, 295)]
    [InlineData(FullKvElement.Q4_0, 250)]
    [InlineData(FullKvElement.F32, 295)]
    public void GreedyTokensMatchF16(FullKvElement element, int floor)
    {
        var (file, model, backend) = TinyStories();
        using var _ = file;
        using var __ = backend;
        using var f16 = new FullKvCache(model.Config, 512);
        using var cache = new FullKvCache(model.Config, 512, element);
        int[] a = Greedy(model, f16, [1], 300);
        int vocab = model.Config.VocabSize;
        var logits = model.Forward([1, .. a[..^1]], cache, model.CreateState(), allLogits: true);
        int agree = 0;
        for (int i = 0; i < a.Length; i++)
            if (global::SpeCache.LlamaCpp.LlamaCppModel.ArgMax(logits.Slice(i * vocab, vocab)) == a[i]) agree++;
        cache.Clear();
        int[] b = Greedy(model, cache, [1], 300);
        int same = 0;
        while (same < a.Length && a[same] == b[same]) same++;
        TestContext.Current.TestOutputHelper?.WriteLine($"{FullKvCache.Name(element)}: free-running, the first {same} of {a.Length} greedy tokens equal f16's; teacher-forced, {agree} of {a.Length} next tokens agree");
        Assert.True(agree >= floor, $"{FullKvCache.Name(element)}: only {agree} of {a.Length} next tokens agree with f16's (floor {floor})");
    }

    static readonly string GgmlBase = Path.Combine(TestPaths.Peer, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "linux-x64", "libggml-base.so");

    /// <summary>
    /// The bytes our cache stores for a KV row are the bytes llama.cpp's CPU cache stores: its copy
    /// into a q8_0 / q4_0 / bf16 cache runs ggml's row quantizers, whose reference versions libggml-base exports.
    /// </summary>
    [Theory]
    [InlineData(FullKvElement.Q8_0, "quantize_row_q8_0_ref")]
    [InlineData(FullKvElement.Q4_0, "quantize_row_q4_0_ref")]
    [InlineData(FullKvElement.BF16, "ggml_fp32_to_bf16_row_ref")]
    public void CacheRowsAreLlamaCppsBytes(FullKvElement element, string function)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64 || !File.Exists(GgmlBase))
            Assert.Skip($"llama.cpp peer library not installed ({GgmlBase}); run peer/setup.sh");
        var quantize = (delegate* unmanaged<float*, byte*, long, void>)NativeLibrary.GetExport(NativeLibrary.Load(GgmlBase), function);
        const int kvDim = 64, rows = 200; // tinystories-656k's KV row
        var rng = new Random(5);
        var x = KiviTestData.WithOutlierChannels(rng, rows, kvDim);
        var ours = new byte[rows * FullKvCache.RowBytes(element, kvDim)];
        FullKvCache.Encode(element, x, ours);
        var theirs = new byte[ours.Length];
        fixed (float* px = x)
        fixed (byte* py = theirs)
            for (int r = 0; r < rows; r++)
                quantize(px + r * kvDim, py + r * ours.Length / rows, kvDim);
        Assert.Equal(theirs, ours);
    }
}
