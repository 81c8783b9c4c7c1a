using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.Tests.Eval;

public class AttentionErrorProbeUnitTests
{
    // Two layers, two KV heads shared by two query heads each.
    static readonly ModelConfig Config = SpeCache.Tests.KvCache.Policies.EvictionTestShapes.Shape(kvHeads: 2, group: 2, layers: 2);

    [Fact]
    public void ErrorPerLayerIsTheRelativeDistanceOfTheTwoCachesOutputs()
    {
        // The probe against two caches fed by hand: the same calls, the error computed here in doubles.
        var lossy = PolicySpec.Parse("kivi:bits=1,group=32,residual=32");
        var full = new KvCacheOptions();
        using var probe = new AttentionErrorProbe(KvCacheFactory.Create(full, Config, 256), KvCacheFactory.Create(lossy, Config, 256), Config);
        using var reference = KvCacheFactory.Create(full, Config, 256);
        using var policy = KvCacheFactory.Create(lossy, Config, 256);
        var rnd = new Random(5);
        float[] Random(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(rnd.NextDouble() * 2 - 1))];
        var sum = new double[Config.LayerCount];
        var max = new double[Config.LayerCount];
        int measured = 0;
        for (int step = 0; step < 150; step++)
        {
            int count = step == 0 ? 100 : 1;
            probe.Measuring = step > 0;
            foreach (var c in new[] { probe, reference, policy }) c.BeginStep(count, 0);
            for (int l = 0; l < Config.LayerCount; l++)
            {
                float[] k = Random(count * Config.KvDim), v = Random(count * Config.KvDim), q = Random(count * Config.QDim);
                float[] probeOut = new float[q.Length], refOut = new float[q.Length], polOut = new float[q.Length];
                foreach (var (c, o) in new[] { (probe, probeOut), (reference, refOut), (policy, polOut) })
                {
                    c.Append(l, k, v, count);
                    c.Attend(l, q, o, count);
                }
                Assert.Equal(refOut, probeOut); // the forward pass goes on with the reference's output
                if (step == 0) continue;
                double diff = 0, norm = 0;
                for (int i = 0; i < q.Length; i++)
                {
                    diff += (polOut[i] - (double)refOut[i]) * (polOut[i] - (double)refOut[i]);
                    norm += (double)refOut[i] * refOut[i];
                }
                double error = Math.Sqrt(diff / norm);
                sum[l] += error;
                max[l] = Math.Max(max[l], error);
            }
            if (step > 0) measured++;
            foreach (var c in new[] { probe, reference, policy }) c.Commit(count);
        }
        var mean = probe.MeanErrorPerLayer();
        for (int l = 0; l < Config.LayerCount; l++)
        {
            Assert.Equal(sum[l] / measured, mean[l], 5);
            Assert.Equal(max[l], probe.MaxErrorPerLayer()[l], 5);
            Assert.InRange(mean[l], 0.01, 2); // 1-bit keys and values over 150 random tokens are far from exact
        }
    }

    [Fact]
    public void TheProbeNeedsEmptyCaches()
    {
        using var used = KvCacheFactory.Create(new KvCacheOptions(), Config, 16);
        used.BeginStep(1, 0);
        for (int l = 0; l < Config.LayerCount; l++) used.Append(l, new float[Config.KvDim], new float[Config.KvDim], 1);
        used.Commit(1);
        using var other = KvCacheFactory.Create(new KvCacheOptions(), Config, 16);
        Assert.Throws<ArgumentException>(() => new AttentionErrorProbe(used, other, Config));
    }
}
