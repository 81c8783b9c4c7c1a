using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.Tests.Eval;

public class AttentionErrorProbeUnitTests
{
    static readonly ModelConfig Config = new()
    {
        Architecture = "llama",
        VocabSize = 16,
        Dim = 256,
        HiddenDim = 16,
        LayerCount = 2,
        HeadCount = 4,
        KvHeadCount = 2,
        HeadDim = 64,
        RopeDim = 64,
        ContextLength = 256,
    };

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

public sealed class AttentionErrorProbeModelTests : IDisposable
{
    readonly ModelFile _file = ModelLoader.Open(TestPaths.TinyStories656K);
    readonly CpuBackend _backend = new(1);
    readonly LlamaModel _model;
    readonly int[] _text;

    public AttentionErrorProbeModelTests()
    {
        _model = new LlamaModel(_file, _backend);
        var rnd = new Random(3);
        _text = [.. Enumerable.Range(0, 200).Select(i => i == 0 ? 1 : rnd.Next(3, _model.Config.VocabSize))];
    }

    public void Dispose()
    {
        _backend.Dispose();
        _file.Dispose();
    }

    /// <summary>Logits of every decode step, prefill of 80 then 100 steps, through the decode path generation uses.</summary>
    float[][] Run(IKvCache cache)
    {
        var state = _model.CreateState(64);
        var logits = new List<float[]> { _model.Forward(_text.AsSpan(0, 80), cache, state).ToArray() };
        if (cache is AttentionErrorProbe probe) probe.Measuring = true;
        var stepper = new DecodeStepper(_model, cache, state);
        for (int t = 80; t < 180; t++) logits.Add(stepper.Step(_text[t]).ToArray());
        return [.. logits];
    }

    [Fact]
    public void ALossyPolicyBehindTheProbeLeavesTheForwardPassExact()
    {
        // Teacher forcing through the layers: whatever the policy gets wrong, the hidden states (and
        // so the logits) are the full cache's, so each layer's error is its own, not inherited. The
        // policy decodes a speculative row each step, which the reference never sees.
        using var full = KvCacheFactory.Create(new KvCacheOptions(), _model.Config, 512);
        var expected = Run(full);
        var lossy = PolicySpec.Parse("specache:bits=1,group=64,k=4,spec=on");
        using var probe = new AttentionErrorProbe(KvCacheFactory.Create(new KvCacheOptions(), _model.Config, 512),
            KvCacheFactory.Create(lossy, _model.Config, 512), _model.Config);
        Assert.Equal(1, probe.SpeculativeRows);
        var actual = Run(probe);
        for (int s = 0; s < expected.Length; s++) Assert.Equal(expected[s], actual[s]);
        Assert.All(probe.MeanErrorPerLayer(), e => Assert.InRange(e, 1e-3, 1));
    }

    [Fact]
    public void AnExactPolicyHasNoError()
    {
        using var probe = new AttentionErrorProbe(KvCacheFactory.Create(new KvCacheOptions(), _model.Config, 512),
            KvCacheFactory.Create(PolicySpec.Parse("specache:bits=1,group=64,k=512,spec=on"), _model.Config, 512), _model.Config);
        Run(probe);
        Assert.All(probe.MaxErrorPerLayer(), e => Assert.True(e < 1e-5, $"error {e}"));
    }
}
