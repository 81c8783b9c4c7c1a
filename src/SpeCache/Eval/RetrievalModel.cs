using System.Runtime.InteropServices;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Quants;
using SpeCache.Transformer;

namespace SpeCache.Eval;

/// <summary>
/// A constructed Llama-architecture model that solves key-value retrieval by attention alone, with
/// closed-form weights, so long-context accuracy can be measured where no trained long-context model
/// can be downloaded. It is an ordinary GGUF file: our engine (and llama.cpp) run it like any other.
/// </summary>
/// <remarks>
/// <para><b>Vocabulary.</b> <c>&lt;unk&gt; &lt;s&gt; &lt;/s&gt;</c>; 256 filler tokens (the haystack);
/// a pair token P(k, v) for each of <see cref="Keys"/> keys and <see cref="Values"/> values (a needle:
/// "key k holds value v"); a query token Q(k) per key; an answer token A(v) per value.</para>
/// <para><b>Residual stream</b> (dim 256): dims 0-63 a unit key code c_k (random ±1/8, so two keys'
/// codes overlap by 0 ± 0.125); 64-95 the value one-hot of a pair token; 96-127 where the answer is
/// written; 128-191 a filler's random content; 254 a query flag; 255 a constant 1 every token has.</para>
/// <para><b>One layer, two query heads sharing one KV head (GQA), head size 128.</b> Keys carry the key
/// code in head dims 64-127, the slowest RoPE pairs (frequency ≤ θ^-1/2 = 1e-6 rad per token with
/// θ = 1e12, so under 0.13 rad over 128K tokens): a query Q(k) scores ≈ 40 against P(k, ·) and
/// 0 ± 5 against other keys and fillers, so full attention finds the needle among 128K tokens.
/// Head dims 0-63 are realistic clutter, as KIVI reports real keys have: two outlier channels with a
/// large constant (from dim 255) and filler-dependent content on the rest, which queries read
/// weakly; values carry the value one-hot (pair tokens) or filler content. The attention output is
/// written to the answer dims; the FFN is zero; the classifier reads the answer dims into A(v).</para>
/// <para><b>Why it is a fair test.</b> Nothing in it knows about any KV policy: retrieval succeeds
/// exactly when the attention of the last token puts its weight on the needle's key and reads back
/// its value, which is what a low-bit copy, a top-k selection or an eviction policy can get wrong.
/// Key codes are random, not chosen to quantize well; the clutter channels make per-channel and
/// per-token quantization ranges wide, as in real models.</para>
/// <para><b>Variable tracking</b> (<c>hops</c> &gt; 0). RULER's variable tracking asks for the value of
/// the last variable of a chain X1 = v, X2 = X1, ..., which takes one attention read per link: X2's
/// token holds the name X1, not v. With hops &gt; 0 the vocabulary gains a link token L(to, from)
/// ("key <i>to</i> holds what key <i>from</i> holds") for each pair of the first <see cref="LinkKeys"/>
/// keys, and <c>hops</c> link layers come before the retrieval layer (which is the same as the
/// one-layer model's). A link token carries its own key's code where pairs do (so it is found like a
/// pair) and the code of the key it copies in its filler dims. In each link layer an unresolved link
/// queries that second code, finds the pair or link defining it (score ≈ 40) and writes what that
/// token's value dims hold into its own value dims; a chain of n links is resolved after n layers,
/// so the final query reads the value from the last link as it would from a pair. Every other
/// token, and a link already resolved, attends to BOS instead (an attention sink, as real models
/// have: score 20 for an unresolved link, ≈ 80 once value dims are set), whose value is empty.
/// The link layers have the same kind of key clutter and outlier channels as the retrieval layer.</para>
/// </remarks>
public static class RetrievalModel
{
    public const int Keys = 256, Values = 32, Fillers = 256;
    public const int Dim = 256, HeadDim = 128, Heads = 2, KvHeads = 1, Hidden = 64;
    public const float RopeTheta = 1e12f;

    public const int Unk = 0, Bos = 1, Eos = 2;
    public static int Filler(int i) => 3 + i;
    public static int Pair(int key, int value) => 3 + Fillers + key * Values + value;
    public static int Query(int key) => 3 + Fillers + Keys * Values + key;
    public static int Answer(int value) => 3 + Fillers + Keys * Values + Keys + value;
    public static int VocabSize => 3 + Fillers + Keys * Values + Keys + Values;

    /// <summary>Keys that can appear in variable-tracking chains (link tokens exist among these).</summary>
    public const int LinkKeys = 64;
    /// <summary>Most link layers a model can have (one per hop of a variable-tracking chain).</summary>
    public const int MaxHops = 4;
    /// <summary>L(to, from): "key <paramref name="to"/> holds what key <paramref name="from"/> holds" (models with hops &gt; 0).</summary>
    public static int Link(int to, int from) => VocabSize + to * LinkKeys + from;
    /// <summary>The vocabulary of a model with link layers.</summary>
    public static int VocabSizeWithLinks => VocabSize + LinkKeys * LinkKeys;

    /// <summary>Link layers of a constructed model (its layers but the last), or 0 for a model that is not one with links.</summary>
    public static int LinkLayers(ModelConfig config) => config.VocabSize == VocabSizeWithLinks ? config.LayerCount - 1 : 0;

    const int CodeDims = 64, ValueAt = 64, AnswerAt = 96, FillerAt = 128, FillerDims = 64, BosFlag = 253, QueryFlag = 254, Constant = 255;
    const int SinkDim = 62; // head dim of the sink feature: with 63 the slowest RoPE pair outside the codes (< 0.2 rad over 128K)

    /// <summary>Writes the model to <paramref name="path"/> (atomically) for a context of <paramref name="contextLength"/> tokens.</summary>
    /// <param name="keySimilarity">How much all key codes share (0 to 0.9): each code is
    /// sqrt(s)·common + sqrt(1-s)·own, so a wrong key scores s·40 against a right key's 40. Higher
    /// values make retrieval harder for every policy alike, as similar keys (names, numbers) do in
    /// real text; 0 gives independent keys.</param>
    /// <param name="hops">Link layers before the retrieval layer (0 to <see cref="MaxHops"/>), so that
    /// variable-tracking chains of that many links can be followed; 0 writes the one-layer model.</param>
    public static void Write(string path, int contextLength = 131072, int seed = 1234, double keySimilarity = 0, int hops = 0)
    {
        if (keySimilarity is < 0 or > 0.9) throw new ArgumentOutOfRangeException(nameof(keySimilarity), keySimilarity, "key similarity must be between 0 and 0.9");
        if (hops is < 0 or > MaxHops) throw new ArgumentOutOfRangeException(nameof(hops), hops, $"hops must be between 0 and {MaxHops}");
        var rnd = new Random(seed);
        int vocab = hops == 0 ? VocabSize : VocabSizeWithLinks;
        var codes = new float[Keys, CodeDims];
        var common = new float[CodeDims];
        for (int c = 0; c < CodeDims; c++) common[c] = rnd.Next(2) == 0 ? -0.125f : 0.125f;
        for (int k = 0; k < Keys; k++)
        {
            double norm = 0;
            for (int c = 0; c < CodeDims; c++)
            {
                float own = rnd.Next(2) == 0 ? -0.125f : 0.125f;
                codes[k, c] = (float)(Math.Sqrt(keySimilarity) * common[c] + Math.Sqrt(1 - keySimilarity) * own);
                norm += codes[k, c] * codes[k, c];
            }
            for (int c = 0; c < CodeDims; c++) codes[k, c] /= (float)Math.Sqrt(norm);
        }

        // Token embeddings (vocab, dim).
        var embedding = new float[vocab * Dim];
        Span<float> Row(int token) => embedding.AsSpan(token * Dim, Dim);
        for (int t = 0; t < vocab; t++) Row(t)[Constant] = 1;
        for (int i = 0; i < Fillers; i++)
        {
            var row = Row(Filler(i));
            for (int c = 0; c < FillerDims; c++) row[FillerAt + c] = (float)Normal(rnd) / 8; // unit norm on average
        }
        for (int k = 0; k < Keys; k++)
        {
            for (int v = 0; v < Values; v++)
            {
                var row = Row(Pair(k, v));
                for (int c = 0; c < CodeDims; c++) row[c] = codes[k, c];
                row[ValueAt + v] = 1;
            }
            var query = Row(Query(k));
            for (int c = 0; c < CodeDims; c++) query[c] = codes[k, c];
            query[QueryFlag] = 1;
        }
        if (hops > 0)
        {
            Row(Bos)[BosFlag] = 1;
            for (int to = 0; to < LinkKeys; to++)
                for (int from = 0; from < LinkKeys; from++)
                {
                    var row = Row(Link(to, from));
                    for (int c = 0; c < CodeDims; c++)
                    {
                        row[c] = codes[to, c];
                        row[FillerAt + c] = codes[from, c];
                    }
                }
        }

        // Attention: queries read the key code from the code dims, so Q(k) finds P(k, ·).
        var (wq, wk, wv) = CodeLayer(rnd, queryCodeAt: 0, clutterEnd: 64);
        var wo = new float[Dim * Heads * HeadDim];   // (dim, heads * headDim)
        // Both heads write what they read back to the answer dims (each half).
        for (int h = 0; h < Heads; h++)
            for (int v = 0; v < Values; v++) wo[(AnswerAt + v) * (Heads * HeadDim) + h * HeadDim + v] = 4;

        // Classifier: A(v) reads answer dim v; every other token scores 0.
        var output = new float[vocab * Dim];
        for (int v = 0; v < Values; v++) output[Answer(v) * Dim + AnswerAt + v] = 10;

        var ones = new float[Dim];
        Array.Fill(ones, 1f);
        var zeros = new float[Hidden * Dim];
        var layers = new List<(float[] Q, float[] K, float[] V, float[] O)>();
        for (int l = 0; l < hops; l++) layers.Add(LinkLayer(new Random(seed + 1 + l)));
        layers.Add((wq, wk, wv, wo));

        using var writer = new GgufWriter(path);
        writer.SetMetadata("general.architecture", "llama");
        writer.SetMetadata("general.name", hops == 0 ? "specache-retrieval" : $"specache-retrieval-vt{hops}");
        writer.SetMetadata("general.description", "Constructed key-value retrieval model (SpeCache evaluation); see SpeCache.Eval.RetrievalModel");
        writer.SetMetadata("llama.vocab_size", (uint)vocab);
        writer.SetMetadata("llama.context_length", (uint)contextLength);
        writer.SetMetadata("llama.embedding_length", (uint)Dim);
        writer.SetMetadata("llama.block_count", (uint)layers.Count);
        writer.SetMetadata("llama.feed_forward_length", (uint)Hidden);
        writer.SetMetadata("llama.attention.head_count", (uint)Heads);
        writer.SetMetadata("llama.attention.head_count_kv", (uint)KvHeads);
        writer.SetMetadata("llama.attention.key_length", (uint)HeadDim);
        writer.SetMetadata("llama.attention.value_length", (uint)HeadDim);
        writer.SetMetadata("llama.attention.layer_norm_rms_epsilon", 1e-5f);
        writer.SetMetadata("llama.rope.freq_base", RopeTheta);
        writer.SetMetadata("llama.rope.dimension_count", (uint)HeadDim);
        writer.SetMetadata("general.file_type", 1u); // mostly F16
        writer.SetMetadata("tokenizer.ggml.model", "llama");
        writer.SetMetadata("tokenizer.ggml.tokens", TokenNames(hops > 0));
        writer.SetMetadata("tokenizer.ggml.scores", new float[vocab]);
        writer.SetMetadata("tokenizer.ggml.token_type", Enumerable.Range(0, vocab).Select(t => t < 3 ? (t == Unk ? 2 : 3) : 1).ToArray());
        writer.SetMetadata("tokenizer.ggml.bos_token_id", (uint)Bos);
        writer.SetMetadata("tokenizer.ggml.eos_token_id", (uint)Eos);
        writer.SetMetadata("tokenizer.ggml.unknown_token_id", (uint)Unk);

        var tensors = new List<(string Name, long[] Shape, float[] Data, bool Half)> { ("token_embd.weight", [Dim, vocab], embedding, true) };
        for (int l = 0; l < layers.Count; l++)
        {
            tensors.Add(($"blk.{l}.attn_norm.weight", [Dim], ones, false));
            tensors.Add(($"blk.{l}.attn_q.weight", [Dim, Heads * HeadDim], layers[l].Q, true));
            tensors.Add(($"blk.{l}.attn_k.weight", [Dim, KvHeads * HeadDim], layers[l].K, true));
            tensors.Add(($"blk.{l}.attn_v.weight", [Dim, KvHeads * HeadDim], layers[l].V, true));
            tensors.Add(($"blk.{l}.attn_output.weight", [Heads * HeadDim, Dim], layers[l].O, true));
            tensors.Add(($"blk.{l}.ffn_norm.weight", [Dim], ones, false));
            tensors.Add(($"blk.{l}.ffn_gate.weight", [Dim, Hidden], zeros, true));
            tensors.Add(($"blk.{l}.ffn_up.weight", [Dim, Hidden], zeros, true));
            tensors.Add(($"blk.{l}.ffn_down.weight", [Hidden, Dim], zeros, true));
        }
        tensors.Add(("output_norm.weight", [Dim], ones, false));
        tensors.Add(("output.weight", [Dim, vocab], output, true));
        foreach (var t in tensors) writer.AddTensor(t.Name, t.Half ? GgmlType.F16 : GgmlType.F32, t.Shape);
        foreach (var t in tensors)
        {
            if (!t.Half)
            {
                writer.WriteTensorData(MemoryMarshal.AsBytes(t.Data.AsSpan()));
                continue;
            }
            var bytes = new byte[t.Data.Length * 2];
            F16.QuantizeRow(t.Data, bytes);
            writer.WriteTensorData(bytes);
        }
        writer.Finish();
    }

    /// <summary>
    /// One link layer (see the remarks): unresolved links read the code of the key they copy and
    /// write the value found into their own value dims; everything else attends to BOS.
    /// </summary>
    static (float[] Q, float[] K, float[] V, float[] O) LinkLayer(Random rnd)
    {
        // RMSNorm scales an unresolved link by sqrt(256/3) and BOS by sqrt(256/2), so the sink
        // scores 9.24·α·γ ≈ 20 with α = 2.16, γ = 1; set value dims (sum 1) add β·8 = 63 more, far
        // above any match (≈ 40, as in the retrieval layer).
        const float alpha = 2.16f, beta = 7.84f, gamma = 1f;
        // Two heads each add half of what they read: a pair's value, 9.24 after RMSNorm, becomes 1.
        const float write = 1 / (2 * 9.24f);
        // Queries read the code a link copies, which it holds in its filler dims; head dims up to
        // the sink's carry the clutter.
        var (wq, wk, wv) = CodeLayer(rnd, queryCodeAt: FillerAt, clutterEnd: SinkDim);
        for (int h = 0; h < Heads; h++)
        {
            wq[(h * HeadDim + SinkDim) * Dim + Constant] = alpha;
            for (int v = 0; v < Values; v++) wq[(h * HeadDim + SinkDim) * Dim + ValueAt + v] = beta;
        }
        wk[SinkDim * Dim + BosFlag] = gamma;
        var wo = new float[Dim * Heads * HeadDim];
        for (int h = 0; h < Heads; h++)
            for (int v = 0; v < Values; v++) wo[(ValueAt + v) * (Heads * HeadDim) + h * HeadDim + v] = write;
        return (wq, wk, wv, wo);
    }

    /// <summary>
    /// What every attention layer of the model shares. Queries read a key code from the residual at
    /// <paramref name="queryCodeAt"/> into head dims 64-127, the slowest RoPE pairs, and keys their
    /// own code there: RMSNorm scales a pair or query token by sqrt(256/3) ≈ 9.2, so with a = 2.3 on
    /// both sides the match logit is (9.2 · 2.3)² / sqrt(128) ≈ 40. Head dims 2 up to
    /// <paramref name="clutterEnd"/> of keys are clutter (filler content), and dims 0-1 two outlier
    /// channels (a large constant); queries read the clutter weakly, so it moves scores a little, as
    /// in real models. Values carry the value one-hot (head dims 0-31) and filler content.
    /// </summary>
    static (float[] Q, float[] K, float[] V) CodeLayer(Random rnd, int queryCodeAt, int clutterEnd)
    {
        const float a = 2.3f;
        var wq = new float[Heads * HeadDim * Dim];   // (heads * headDim, dim)
        var wk = new float[KvHeads * HeadDim * Dim];
        var wv = new float[KvHeads * HeadDim * Dim];
        for (int h = 0; h < Heads; h++)
            for (int c = 0; c < CodeDims; c++) wq[(h * HeadDim + 64 + c) * Dim + queryCodeAt + c] = a;
        for (int c = 0; c < CodeDims; c++) wk[(64 + c) * Dim + c] = a;
        wk[0 * Dim + Constant] = 3;
        wk[1 * Dim + Constant] = -2;
        for (int d = 2; d < clutterEnd; d++)
            for (int c = 0; c < FillerDims; c++) wk[d * Dim + FillerAt + c] = (float)Normal(rnd) * 0.3f;
        for (int h = 0; h < Heads; h++)
            for (int d = 2; d < clutterEnd; d++)
                for (int c = 0; c < CodeDims; c++) wq[(h * HeadDim + d) * Dim + queryCodeAt + c] = (float)Normal(rnd) * 0.05f;
        for (int v = 0; v < Values; v++) wv[v * Dim + ValueAt + v] = 1;
        for (int d = Values; d < HeadDim; d++)
            for (int c = 0; c < FillerDims; c++) wv[d * Dim + FillerAt + c] = (float)Normal(rnd) * 0.3f;
        return (wq, wk, wv);
    }

    static string[] TokenNames(bool links)
    {
        var names = new List<string> { "<unk>", "<s>", "</s>" };
        for (int i = 0; i < Fillers; i++) names.Add($"▁f{i}");
        for (int k = 0; k < Keys; k++)
            for (int v = 0; v < Values; v++) names.Add($"▁k{k}=v{v}");
        for (int k = 0; k < Keys; k++) names.Add($"▁k{k}?");
        for (int v = 0; v < Values; v++) names.Add($"▁v{v}");
        if (links)
            for (int to = 0; to < LinkKeys; to++)
                for (int from = 0; from < LinkKeys; from++) names.Add($"▁k{to}=k{from}");
        return [.. names];
    }

    static double Normal(Random rnd) => Math.Sqrt(-2 * Math.Log(1 - rnd.NextDouble())) * Math.Cos(2 * Math.PI * rnd.NextDouble());
}
