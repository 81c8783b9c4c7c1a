using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.Tensors;
using SpeCache.Tests.Cli;
using SpeCache.Transformer;

namespace SpeCache.Tests.Tensors;

/// <summary>Weight matrices copied into process memory (the default) against read from the file's map (--mmap).</summary>
public unsafe class WeightArenaTests
{
    public static TheoryData<string, bool> Models() => new()
    {
        { TestPaths.Stories260K, true },        // llama2.c, classifier tied to the embedding
        { TestPaths.Llama2TinyRandom, false },  // GGUF with its own output.weight
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void CopiedWeightsHoldTheFilesBytesAndGiveTheSameLogits(string path, bool tied)
    {
        using var file = ModelLoader.Open(path);
        using var backend = new CpuBackend(2);
        using var mapped = new LlamaModel(file, backend, mapWeights: true);
        using var copied = new LlamaModel(file, backend);
        Assert.Equal(tied, file.Config.TiedEmbeddings);
        Assert.Equal(0, mapped.ProcessMemoryWeightBytes);

        var pairs = mapped.Weights.Layers.Zip(copied.Weights.Layers).SelectMany(p => p.First.Matrices.Zip(p.Second.Matrices))
            .Append((mapped.Weights.Output, copied.Weights.Output)).ToList();
        long bytes = 0;
        foreach (var (m, c) in pairs)
        {
            Assert.NotEqual((nint)m.Data, (nint)c.Data);
            Assert.Equal(0, (nint)c.Data % 64);
            Assert.Equal(m.Name, c.Name);
            Assert.Equal(m.Type, c.Type);
            Assert.Equal(m.Shape, c.Shape);
            Assert.True(m.Bytes.SequenceEqual(c.Bytes), m.Name);
            bytes += c.ByteLength;
        }
        if (tied) bytes -= copied.Weights.Output.ByteLength; // counted once: the head is the embedding
        Assert.InRange(copied.ProcessMemoryWeightBytes, bytes, bytes + (2 << 20) + 64 * pairs.Count);
        // A tied head is the embedding, copied once; an untied embedding is only looked up and stays in the map.
        if (tied) Assert.Same(copied.Weights.Output, copied.Weights.TokenEmbedding);
        else Assert.Equal((nint)mapped.Weights.TokenEmbedding.Data, (nint)copied.Weights.TokenEmbedding.Data);

        int[] tokens = [1, 20, 33, 47, 51];
        float[] Logits(LlamaModel model)
        {
            using var cache = KvCacheFactory.Create(new KvCacheOptions(), model.Config, 16);
            return model.Forward(tokens, cache, model.CreateState(8), allLogits: true).ToArray();
        }
        Assert.Equal(Logits(mapped), Logits(copied));
    }

    /// <summary>
    /// A library user may keep a model's weights and drop the model without disposing it: the
    /// copies hold the arena's memory, so collecting the model frees nothing they still point into.
    /// </summary>
    [Fact]
    public void WeightsTakenFromADroppedModelStayReadable()
    {
        using var file = ModelLoader.Open(TestPaths.Llama2TinyRandom);
        using var backend = new CpuBackend(1);
        var (model, weights) = LoadAndDrop(file, backend);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(model.IsAlive, "the model was not collected, so the test shows nothing");
        var wq = weights.Layers[0].Wq;
        var owner = Assert.IsAssignableFrom<System.Runtime.InteropServices.SafeHandle>(wq.Owner);
        Assert.False(owner.IsClosed);
        Assert.True(wq.Bytes.SequenceEqual(file.Tensors[wq.Name].Bytes));
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    static (WeakReference Model, LlamaWeights Weights) LoadAndDrop(ModelFile file, CpuBackend backend)
    {
        var model = new LlamaModel(file, backend);
        return (new WeakReference(model), model.Weights);
    }

    [Fact]
    public void AnArenaRefusesATensorBeyondItsRoomAndWorkAfterDispose()
    {
        using var file = ModelLoader.Open(TestPaths.Llama2TinyRandom);
        var tensor = file.Tensors.Values.First(t => t.Shape.Length == 2);
        var arena = new WeightArena(WeightArena.SpaceFor(tensor));
        Assert.True(arena.Copy(tensor).Bytes.SequenceEqual(tensor.Bytes));
        int fit = (int)(arena.Capacity / WeightArena.SpaceFor(tensor)) - 1;
        for (int i = 0; i < fit; i++) arena.Copy(tensor);
        var full = Assert.Throws<InvalidOperationException>(() => arena.Copy(tensor));
        Assert.Contains(tensor.Name, full.Message);
        arena.Dispose();
        arena.Dispose();
        Assert.Throws<ObjectDisposedException>(() => arena.Copy(tensor));
    }

    [Fact]
    public void GenerateWithMmapWritesTheSameTextAsWithACopy()
    {
        var copy = CliRunner.Run("generate", "--temperature", "0", "-n", "30", "-p", "Once upon a time");
        var mapped = CliRunner.Run("generate", "--temperature", "0", "-n", "30", "-p", "Once upon a time", "--mmap");
        Assert.True(copy.ExitCode == 0, copy.StdErr);
        Assert.True(mapped.ExitCode == 0, mapped.StdErr);
        Assert.StartsWith(", there was a little girl", copy.StdOut); // the continuation of the prompt
        Assert.Equal(copy.StdOut, mapped.StdOut);
    }
}
