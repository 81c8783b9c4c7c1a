using SpeCache.KvCache;
using SpeCache.KvCache.Policies.Full;
using SpeCache.KvCache.Policies.Kivi;
using SpeCache.KvCache.Quantization;
using SpeCache.ModelFiles;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.Tests.KvCache.Policies;

public class KiviKvCacheTests
{
    static ModelConfig Shape(int kvHeads, int group, int headDim = 64) => new()
    {
        Architecture = "llama",
        VocabSize = 16,
        Dim = kvHeads * group * headDim,
        HiddenDim = 16,
        LayerCount = 1,
        HeadCount = kvHeads * group,
        KvHeadCount = kvHeads,
        HeadDim = headDim,
        RopeDim = headDim,
        ContextLength = 512,
    };

    /// <summary>
    /// Attention over what the cache holds, computed the slow way: dequantize the folded groups with
    /// the quantizer's reference functions, keep the residual exact, one softmax, causal per row.
    /// </summary>
    [Theory]
    [InlineData(2, 32, 32, 1)]
    [InlineData(1, 32, 64, 1)]
    [InlineData(4, 64, 64, 1)]
    [InlineData(2, 32, 32, 40)]
    public void AttendEqualsDequantizedReference(int bits, int groupSize, int residual, int chunk)
    {
        var c = Shape(kvHeads: 2, group: 2);
        var options = new KiviOptions(bits, groupSize, residual);
        using var cache = new KiviKvCache(c, 400, options);
        var rnd = new Random(bits * 100 + chunk);
        float[] Random(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rnd.NextDouble() * 2 - 1); return a; }
        var allK = new List<float[]>();
        var allV = new List<float[]>();
        int total = 0;
        // Append single tokens past several folds, then one chunk that itself crosses a fold.
        foreach (int n in new[] { 1, 1, 1 }.Concat(Enumerable.Repeat(1, 150)).Append(chunk))
        {
            var k = Random(n * c.KvDim);
            var v = Random(n * c.KvDim);
            var q = Random(n * c.QDim);
            for (int t = 0; t < n; t++) { allK.Add(k[(t * c.KvDim)..((t + 1) * c.KvDim)]); allV.Add(v[(t * c.KvDim)..((t + 1) * c.KvDim)]); }
            cache.Append(0, k, v, n);
            var output = new float[n * c.QDim];
            cache.Attend(0, q, output, n);
            var expected = Reference(c, options, allK, allV, q, total, n);
            for (int i = 0; i < output.Length; i++)
                Assert.True(MathF.Abs(output[i] - expected[i]) < 2e-4f, $"token {total}, value {i}: {output[i]} vs {expected[i]}");
            cache.Commit(n);
            total += n;
        }
    }

    static float[] Reference(ModelConfig c, KiviOptions o, List<float[]> keys, List<float[]> values, float[] q, int start, int n)
    {
        var format = new KiviFormat(c.HeadDim, o.GroupSize, o.Bits);
        int stored = keys.Count;
        // The cache folds whole groups once the residual reaches R + G; everything before 'folded' is low-bit.
        int folded = stored < o.ResidualLength + o.GroupSize ? 0 : (stored - o.ResidualLength) / o.GroupSize * o.GroupSize;
        var output = new float[n * c.QDim];
        for (int h = 0; h < c.KvHeadCount; h++)
        {
            var k = new float[stored][];
            var v = new float[stored][];
            for (int t = 0; t < stored; t++) { k[t] = keys[t][(h * c.HeadDim)..((h + 1) * c.HeadDim)]; v[t] = values[t][(h * c.HeadDim)..((h + 1) * c.HeadDim)]; }
            var groups = new List<byte[]>();
            for (int g0 = 0; g0 < folded; g0 += o.GroupSize)
            {
                var packed = new byte[format.KeyGroupBytes];
                groups.Add(packed);
                var block = new float[o.GroupSize * c.HeadDim];
                for (int t = 0; t < o.GroupSize; t++) k[g0 + t].CopyTo(block, t * c.HeadDim);
                KiviQuantizer.QuantizeKeyGroup(format, block, c.HeadDim, packed);
                KiviQuantizer.DequantizeKeyGroup(format, packed, block);
                for (int t = 0; t < o.GroupSize; t++)
                {
                    k[g0 + t] = block[(t * c.HeadDim)..((t + 1) * c.HeadDim)];
                    var token = new byte[format.ValueBytes(1)];
                    KiviQuantizer.QuantizeValueToken(format, v[g0 + t], token, 0);
                    var back = new float[c.HeadDim];
                    KiviQuantizer.DequantizeValueToken(format, token, 0, back);
                    v[g0 + t] = back;
                }
            }
            for (int i = 0; i < n; i++)
                for (int j = 0; j < c.QueryGroupSize; j++)
                {
                    int head = h * c.QueryGroupSize + j;
                    var qh = q.AsSpan(i * c.QDim + head * c.HeadDim, c.HeadDim);
                    int visible = start + i + 1;
                    var s = new double[visible];
                    // Low-bit groups scored as the kernel this CPU runs computes them (on AVX2 at 1 bit, with
                    // q∘s rounded to bytes); the rest exactly, against the dequantized keys.
                    var groupScores = new float[o.GroupSize];
                    for (int g0 = 0; g0 < Math.Min(folded, visible); g0 += o.GroupSize)
                    {
                        KiviAttention.KeyScoresReference(KiviAttention.BestKernel(format), format, qh, groups[g0 / o.GroupSize], groupScores, o.GroupSize);
                        for (int t = 0; t < o.GroupSize && g0 + t < visible; t++) s[g0 + t] = groupScores[t] / Math.Sqrt(c.HeadDim);
                    }
                    for (int t = Math.Min(folded, visible); t < visible; t++)
                    {
                        double dot = 0;
                        for (int d = 0; d < c.HeadDim; d++) dot += qh[d] * k[t][d];
                        s[t] = dot / Math.Sqrt(c.HeadDim);
                    }
                    double max = s.Max(), sum = s.Sum(x => Math.Exp(x - max));
                    for (int d = 0; d < c.HeadDim; d++)
                    {
                        double acc = 0;
                        for (int t = 0; t < visible; t++) acc += Math.Exp(s[t] - max) / sum * v[t][d];
                        output[i * c.QDim + head * c.HeadDim + d] = (float)acc;
                    }
                }
        }
        return output;
    }

    [Fact]
    public void ThreadedHeadsEqualTheReference()
    {
        // 4 KV heads and 1200+ tokens: the heads are spread over threads (on 2+ cores).
        var c = Shape(kvHeads: 4, group: 2) with { ContextLength = 1300 };
        var options = new KiviOptions(2, 32, 64);
        using var cache = new KiviKvCache(c, 1300, options);
        var rnd = new Random(9);
        float[] Random(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rnd.NextDouble() * 2 - 1); return a; }
        var allK = new List<float[]>();
        var allV = new List<float[]>();
        int total = 0;
        foreach (int n in new[] { 1200, 1, 1 })
        {
            var k = Random(n * c.KvDim);
            var v = Random(n * c.KvDim);
            var q = Random(n * c.QDim);
            for (int t = 0; t < n; t++) { allK.Add(k[(t * c.KvDim)..((t + 1) * c.KvDim)]); allV.Add(v[(t * c.KvDim)..((t + 1) * c.KvDim)]); }
            cache.Append(0, k, v, n);
            if (n == 1)
            {
                var output = new float[c.QDim];
                cache.Attend(0, q, output, 1);
                var expected = Reference(c, options, allK, allV, q, total, 1);
                for (int i = 0; i < output.Length; i++)
                    Assert.True(MathF.Abs(output[i] - expected[i]) < 2e-4f, $"token {total}, value {i}: {output[i]} vs {expected[i]}");
            }
            cache.Commit(n);
            total += n;
        }
    }

    [Fact]
    public void WithTheResidualCoveringTheContextKiviEqualsFull()
    {
        using var file = ModelLoader.Open(TestPaths.TinyStories656K);
        using var backend = new CpuBackend(1);
        var model = new LlamaModel(file, backend);
        using var full = new FullKvCache(model.Config, 256, FullKvElement.F32);
        using var kivi = new KiviKvCache(model.Config, 256, new KiviOptions(Bits: 1, GroupSize: 32, ResidualLength: 256));
        var sf = model.CreateState();
        var sk = model.CreateState();
        int token = 1;
        for (int step = 0; step < 120; step++)
        {
            float[] a = model.Forward([token], full, sf).ToArray();
            float[] b = model.Forward([token], kivi, sk).ToArray();
            for (int v = 0; v < a.Length; v++) Assert.True(MathF.Abs(a[v] - b[v]) < 1e-4f, $"step {step}, logit {v}: {a[v]} vs {b[v]}");
            token = global::SpeCache.LlamaCpp.LlamaCppModel.ArgMax(a);
        }
    }

    // Measured on tinystories-656k, G32, R32: the first 91 (4-bit) and 65 (2-bit) of 300 greedy
    // tokens equal full's; the floors leave room for summation-order changes in the kernels.
    [Theory]
    [InlineData(4, 0.8)]
    [InlineData(2, 0.5)]
    public void GreedyTextStaysCloseToFull(int bits, double floor)
    {
        using var file = ModelLoader.Open(TestPaths.TinyStories656K);
        using var backend = new CpuBackend(1);
        var model = new LlamaModel(file, backend);
        int[] Greedy(IKvCache cache)
        {
            var state = model.CreateState();
            var tokens = new int[300];
            var logits = model.Forward([1], cache, state);
            for (int i = 0; i < tokens.Length; i++)
            {
                tokens[i] = global::SpeCache.LlamaCpp.LlamaCppModel.ArgMax(logits);
                logits = model.Forward([tokens[i]], cache, state);
            }
            return tokens;
        }
        using var full = new FullKvCache(model.Config, 512);
        using var kivi = new KiviKvCache(model.Config, 512, new KiviOptions(bits, 32, 32));
        int[] a = Greedy(full), b = Greedy(kivi);
        int same = 0;
        while (same < a.Length && a[same] == b[same]) same++;
        TestContext.Current.TestOutputHelper?.WriteLine($"kivi {bits}-bit G32 R32: first {same} of {a.Length} greedy tokens equal full");
        Assert.True(same >= floor * 100, $"kivi {bits}-bit: only the first {same} tokens equal full's");
    }

    [Fact]
    public void MemoryIsAccountedFromTheFormat()
    {
        var c = Shape(kvHeads: 2, group: 2);
        using var cache = new KiviKvCache(c, 256, new KiviOptions(2, 32, 64));
        var f = new KiviFormat(64, 32, 2);
        long expected = 2L * ((256 / 32 + 1) * f.KeyGroupBytes + f.ValueBytes(256) + 2L * (64 + 32) * 64 * sizeof(float));
        Assert.Equal(expected, cache.Memory.FastTierBytes);
        // 2 bits at G32, head 64: keys 4*64 + 64*32*2/8 = 768 B per 32 tokens, values 16 + 4*2 = 24 B per token.
        Assert.Equal(2L * (768 / 32 + 24), KiviKvCache.BytesPerToken(c, new KiviOptions(2, 32, 64)));
    }

    [Fact]
    public void AppendingPastCapacityIsAClearError()
    {
        var c = Shape(kvHeads: 1, group: 1);
        using var cache = new KiviKvCache(c, 4, new KiviOptions());
        var e = Assert.Throws<InvalidOperationException>(() => cache.Append(0, new float[5 * 64], new float[5 * 64], 5));
        Assert.Contains("exceed its capacity of 4", e.Message);
    }
}
