using System.Text.Json;
using SpeCache.Eval;
using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.KvCache.Policies.SpeCache;
using SpeCache.ModelFiles;
using SpeCache.Tensors;
using SpeCache.Tests.Cli;
using SpeCache.Transformer;

namespace SpeCache.Tests.Eval;

public class PolicySpecTests
{
    [Fact]
    public void ParsesSettings()
    {
        var o = PolicySpec.Parse("specache:bits=1,group=64,k=8,miss=lowbit,spec=off,recall=on");
        Assert.Equal("specache", o.Policy);
        Assert.Equal(new SpeCacheOptions(1, 64, 64, 8, false, MissPolicy.LowBit, "ram", true), o.SpeCache);
        Assert.Equal("specache 1-bit g64 k8 no-spec lowbit-miss", PolicySpec.Label(o));
        Assert.Equal(2, PolicySpec.Parse("kivi:bits=2").Kivi.Bits);
        Assert.Equal("full", PolicySpec.Parse("full").Policy);
    }

    [Theory]
    [InlineData("magic", "unknown KV cache policy 'magic'")]
    [InlineData("kivi:bits=3", "bits must be 1, 2 or 4")]
    [InlineData("specache:k=lots", "needs a whole number")]
    [InlineData("specache:colour=red", "unknown setting 'colour'")]
    [InlineData("specache:k", "is not key=value")]
    public void RejectsNonsenseWithAClearMessage(string spec, string message) =>
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => PolicySpec.Parse(spec)).Message);
}

public sealed class FidelityEvalTests : IDisposable
{
    readonly ModelFile _file = ModelLoader.Open(TestPaths.TinyStories656K);
    readonly CpuBackend _backend = new(1);
    readonly LlamaModel _model;
    readonly int[] _text;

    public FidelityEvalTests()
    {
        _model = new LlamaModel(_file, _backend);
        var rnd = new Random(2);
        _text = Enumerable.Range(0, 300).Select(i => i == 0 ? 1 : rnd.Next(3, _model.Config.VocabSize)).ToArray();
    }

    public void Dispose()
    {
        _backend.Dispose();
        _file.Dispose();
    }

    [Fact]
    public void ExactPoliciesScoreZeroKlAndFullAgreement()
    {
        var report = FidelityEval.Run(_model, "tinystories", _text, 100, 150, 512,
            ["full", "kivi:bits=2,residual=512", "specache:bits=1,group=64,k=512", "specache:bits=1,group=64,k=4"]);
        Assert.Equal(4, report.Policies.Count);
        foreach (var exact in report.Policies.Take(3))
        {
            Assert.True(exact.MeanKl < 1e-6, $"{exact.Label}: mean KL {exact.MeanKl}");
            Assert.Equal(1.0, exact.Top1Agreement);
            Assert.True(Math.Abs(exact.Perplexity / report.ReferencePerplexity - 1) < 1e-4, $"{exact.Label}: perplexity {exact.Perplexity} vs {report.ReferencePerplexity}");
            Assert.Equal(_model.Config.LayerCount, exact.AttentionErrorPerLayer.Length);
            // KIVI's residual window is F32, so it differs from the F16 reference by F16's rounding (2^-11).
            double tolerance = exact.Label.StartsWith("kivi", StringComparison.Ordinal) ? 2e-3 : 1e-5;
            Assert.All(exact.MaxAttentionErrorPerLayer, e => Assert.True(e < tolerance, $"{exact.Label}: attention error {e}"));
        }
        var lossy = report.Policies[3];
        Assert.True(lossy.MeanKl > 1e-4, $"1-bit with k=4 should lose something: KL {lossy.MeanKl}");
        Assert.Null(lossy.TopKRecall); // recall off
        Assert.NotNull(lossy.PrefetchHitRate);
        Assert.Equal(150, lossy.KlPerStep.Length);
        Assert.All(lossy.AttentionErrorPerLayer, e => Assert.InRange(e, 1e-3, 1));
        Assert.All(lossy.AttentionErrorPerLayer.Zip(lossy.MaxAttentionErrorPerLayer), p => Assert.True(p.First <= p.Second));
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

    [Fact]
    public void ATextTooShortIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => FidelityEval.Run(_model, "m", _text, 200, 200, 512, ["full"]));
        Assert.Contains("fewer than 200 prefill + 200 steps", e.Message);
    }

    [Fact]
    public void TheKlOfADistributionWithItselfIsZeroAndPositiveOtherwise()
    {
        double[] p = [Math.Log(0.5), Math.Log(0.25), Math.Log(0.25)];
        double[] q = [Math.Log(0.25), Math.Log(0.5), Math.Log(0.25)];
        Assert.Equal(0, FidelityEval.Kl(p, p), 12);
        Assert.Equal(0.25 * Math.Log(2), FidelityEval.Kl(p, q), 12);
    }
}

public class EvalCliTests
{
    [Fact]
    public void FidelityWritesReportsThatRoundTrip()
    {
        string dir = Path.Combine(TestPaths.Scratch("eval-cli"), Guid.NewGuid().ToString("N"));
        var result = CliRunner.Run("eval", "fidelity", "-m", TestPaths.TinyStories656K, "--prefill", "100", "--steps", "120",
            "--policy", "kivi:bits=2", "--policy", "specache:bits=1,group=64,k=8,recall=on", "--out", dir);
        Assert.True(result.ExitCode == 0, result.StdErr);
        Assert.Contains("| specache 1-bit g64 k8 |", result.StdOut);
        string json = File.ReadAllText(Path.Combine(dir, "fidelity.json"));
        var report = JsonSerializer.Deserialize<FidelityReport>(json, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!;
        Assert.Equal(2, report.Policies.Count);
        Assert.Equal(120, report.Policies[1].KlPerStep.Length);
        Assert.NotNull(report.Policies[1].TopKRecall);
        Assert.Equal(2, report.Policies[1].AttentionErrorPerLayer.Length); // tinystories-656k has 2 layers
        Assert.True(report.Policies[1].AttentionErrorPerLayer[0] > 0);
        string markdown = File.ReadAllText(Path.Combine(dir, "fidelity.md"));
        Assert.StartsWith("# Fidelity", markdown);
        Assert.Contains("| policy | L0 | L1 | max |", markdown);
        foreach (string png in new[] { "fidelity-kl.png", "fidelity-kl-vs-bytes.png", "fidelity-attention-error.png", "fidelity-kl-vs-k.png" })
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(Path.Combine(dir, png))[..4]);
    }

    [Fact]
    public void ABadPolicyIsOneLine() =>
        CliRunner.AssertOneLineError(CliRunner.Run("eval", "fidelity", "--policy", "specache:k=many"), "needs a whole number");

    /// <summary>An --out that cannot hold the reports is refused before the model loads, for both evals, not after the run.</summary>
    [Theory]
    [InlineData("fidelity")]
    [InlineData("niah")]
    public void AnOutFolderThatCannotBeWrittenIsOneLineBeforeTheRun(string eval)
    {
        string dir = TestPaths.Scratch("eval-out-taken");
        string file = Path.Combine(dir, "taken");
        File.WriteAllText(file, "a file, not a folder");
        CliRunner.AssertOneLineError(CliRunner.Run("eval", eval, "-m", TestPaths.TinyStories656K, "--policy", "full", "--out", file),
            $"--out: cannot write reports into '{file}'");
        Assert.Equal("a file, not a folder", File.ReadAllText(file));
    }
}

public sealed class EvalPoliciesTests : IDisposable
{
    readonly ModelFile _file = ModelLoader.Open(TestPaths.TinyStories656K);
    readonly CpuBackend _backend = new(1);

    public void Dispose()
    {
        _backend.Dispose();
        _file.Dispose();
    }

    [Fact]
    public void EvictionBaselinesGetSpeCacheOneBitsFastTierBytes()
    {
        var config = new LlamaModel(_file, _backend).Config;
        long reference = EvalPolicies.FastTierBytes(EvalPolicies.BudgetReference, config, 512);
        long slot = SpeCache.KvCache.KvCacheFactory.FastTierBytesPerToken(new() { Policy = "streaming" }, config);
        var matched = EvalPolicies.Matched(config, 512);
        Assert.Equal(["streaming", "h2o"], matched.Select(s => PolicySpec.Parse(s).Policy));
        foreach (string spec in matched)
        {
            long bytes = EvalPolicies.FastTierBytes(spec, config, 512);
            // Eviction keeps whole tokens: as many as fit, so at most one token short of the budget.
            Assert.InRange(bytes, reference - slot + 1, reference);
        }
        var all = EvalPolicies.Fidelity(config, 512);
        var ks = all.Select(PolicySpec.Parse).Where(o => o.Policy == "specache").GroupBy(o => o.SpeCache.Bits).ToList();
        Assert.Equal([1, 2], ks.Select(g => g.Key).Order());
        Assert.All(ks, g => Assert.True(g.Select(o => o.SpeCache.TopK).Distinct().Count() >= 3, "KL versus k needs several k per bit width"));
    }
}
