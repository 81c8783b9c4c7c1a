using SpeCache.Eval;
using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Conversion;
using SpeCache.ModelFiles.Synthetic;
using SpeCache.Transformer;

namespace SpeCache.Tests.Transformer;

/// <summary>
/// Hot paths allocate nothing per token once warm: a decode step that allocates feeds the garbage
/// collector on every token, and its pauses land in the middle of generation.
/// </summary>
public class AllocationTests
{
    // The Llama-3.2-1B KV shape, one layer, deep enough that attention runs on several threads.
    static readonly ModelConfig Shape = SyntheticShape.Find("llama-3.2-1b").Config with { LayerCount = 1, ContextLength = 8192 };

    [Theory]
    [InlineData("full")]
    [InlineData("kivi:bits=2")]
    [InlineData("specache:bits=1,group=64,spec=off")]
    [InlineData("specache:bits=2,spec=on")]
    public void AttentionOfADecodeStepAllocatesNothing(string policy)
    {
        const int depth = 4608;
        using var cache = KvCacheFactory.Create(PolicySpec.Parse(policy), Shape, Shape.ContextLength);
        var rnd = new Random(1);
        var rows = new float[256 * Shape.KvDim];
        for (int i = 0; i < rows.Length; i++) rows[i] = (float)(rnd.NextDouble() * 2 - 1) * (i % 64 < 3 ? 10 : 1);
        for (int start = 0; start < depth; start += 256)
        {
            cache.BeginStep(256, 0);
            cache.Append(0, rows, rows, 256);
            cache.Commit(256);
        }
        int stepRows = 1 + cache.SpeculativeRows;
        var q = new float[stepRows * Shape.QDim];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rnd.NextDouble() * 2 - 1);
        var o = new float[stepRows * Shape.QDim];
        var kv = rows.AsSpan(0, stepRows * Shape.KvDim).ToArray();
        void Step()
        {
            cache.BeginStep(stepRows, stepRows - 1);
            cache.Append(0, kv, kv, stepRows);
            cache.Attend(0, q, o, stepRows);
            cache.Commit(1);
        }
        for (int i = 0; i < 30; i++) Step(); // warm up: JIT, first-use buffers, the thread pool's queues
        // The least of several windows: the thread pool's queue may grow a segment when other tests
        // flood it, which is theirs, not this step's. Parallel.For cost about 1.7 KB per call here.
        double perStep = double.MaxValue;
        for (int window = 0; window < 5; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 20; i++) Step();
            perStep = Math.Min(perStep, (GC.GetAllocatedBytesForCurrentThread() - before) / 20.0);
        }
        Assert.True(perStep < 64, $"{policy}: {perStep:F0} bytes allocated per decode step");
    }

    [Theory]
    [InlineData("full")]
    [InlineData("kivi:bits=2")]
    [InlineData("specache:bits=1,group=32,k=8")]
    public void AModelsDecodeStepAllocatesNothing(string policy)
    {
        // The whole forward pass of one token, on Q8_0 weights (the tiled kernels) on two threads.
        string path = Path.Combine(TestPaths.Scratch("allocation"), $"tinystories-q8_0-{Guid.NewGuid():N}.gguf");
        using (var source = ModelLoader.Open(TestPaths.TinyStories656K))
            GgufConverter.Write(source, path, SpeCache.Quants.GgmlType.Q8_0, TokenizerMetadata.For(source));
        using var engine = Engine.Load(path, new EngineOptions { Threads = 2 });
        var model = engine.Model;
        using var cache = KvCacheFactory.Create(PolicySpec.Parse(policy), model.Config, 256);
        var state = model.CreateState();
        model.Forward([1, 400, 500, 600], cache, state);
        int token = 700;
        for (int i = 0; i < 20; i++) model.Forward([token++], cache, state);
        int[] next = [0];
        double perToken = double.MaxValue;
        for (int window = 0; window < 5; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10; i++)
            {
                next[0] = token++;
                model.Forward(next, cache, state);
            }
            perToken = Math.Min(perToken, (GC.GetAllocatedBytesForCurrentThread() - before) / 10.0);
        }
        Assert.True(perToken < 64, $"{policy}: {perToken:F0} bytes allocated per decoded token");
    }
}
