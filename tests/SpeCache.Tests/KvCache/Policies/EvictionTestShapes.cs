using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.Tests.KvCache.Policies;

/// <summary>Small attention shapes and greedy decoding on a real model, shared by the policy tests.</summary>
static class EvictionTestShapes
{
    public static ModelConfig Shape(int kvHeads, int group, int headDim = 64, int layers = 1) => new()
    {
        Architecture = "llama",
        VocabSize = 16,
        Dim = kvHeads * group * headDim,
        HiddenDim = 16,
        LayerCount = layers,
        HeadCount = kvHeads * group,
        KvHeadCount = kvHeads,
        HeadDim = headDim,
        RopeDim = headDim,
        ContextLength = 512,
    };

    /// <summary>Uniform in [-1, 1), rounded to values F16 holds exactly, so an F16 cache loses nothing.</summary>
    public static float[] HalfExact(Random rng, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(Half)(rng.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>
    /// Prefills <paramref name="prompt"/> (in chunks of 64, the model's default), then decodes
    /// <paramref name="steps"/> greedy tokens.
    /// </summary>
    public static int[] Greedy(LlamaModel model, IKvCache cache, int[] prompt, int steps)
    {
        var state = model.CreateState();
        var logits = model.Forward(prompt, cache, state);
        var tokens = new int[steps];
        for (int i = 0; i < steps; i++)
        {
            tokens[i] = global::SpeCache.LlamaCpp.LlamaCppModel.ArgMax(logits);
            if (i + 1 < steps) logits = model.Forward([tokens[i]], cache, state);
        }
        return tokens;
    }

    /// <summary>A 100-token prompt: BOS and the start of full's greedy story (real text, longer than the small windows).</summary>
    public static int[] StoryPrompt(LlamaModel model)
    {
        using var full = new SpeCache.KvCache.Policies.Full.FullKvCache(model.Config, 128);
        return [1, .. Greedy(model, full, [1], 99)];
    }

    public static (ModelFile File, LlamaModel Model, CpuBackend Backend) TinyStories()
    {
        var file = ModelLoader.Open(TestPaths.TinyStories656K);
        var backend = new CpuBackend(1);
        return (file, new LlamaModel(file, backend), backend);
    }
}
