using SpeCache.LlamaCpp.Native;

namespace SpeCache.LlamaCpp;

/// <summary>The shape of a random Llama model; head size is EmbeddingLength / HeadCount.</summary>
public sealed record RandomLlamaShape(
    int EmbeddingLength = 64,
    int LayerCount = 2,
    int HeadCount = 2,
    int KvHeadCount = 2,
    int FeedForwardLength = 128,
    int ContextLength = 2048)
{
    public int HeadSize => EmbeddingLength / HeadCount;
}

/// <summary>
/// Writes GGUF Llama models with random weights of any shape, with ggml's own GGUF writer, so that llama.cpp
/// can be exercised where the vendored tiny model cannot: its 4-wide heads rule out quantized KV caches
/// (32-wide blocks) and its 8-wide rows leave Q8_0/Q4_0 quantization almost nothing to quantize.
/// </summary>
public static unsafe class RandomLlamaWriter
{
    /// <summary>
    /// Writes <paramref name="path"/>: the tokenizer and metadata of <paramref name="tokenizerFrom"/> (a Llama
    /// GGUF), the shape of <paramref name="shape"/>, weights uniform in ±1/sqrt(fan-in) from
    /// <paramref name="seed"/>, norms 1. Matrices are F16 or F32 (<paramref name="ftype"/>); norms are F32.
    /// </summary>
    public static void Write(string path, string tokenizerFrom, RandomLlamaShape shape, int seed = 0, LlamaFtype ftype = LlamaFtype.F16)
    {
        if (ftype is not (LlamaFtype.F16 or LlamaFtype.F32))
            throw new ArgumentException("random weights are written as F16 or F32; quantize afterwards", nameof(ftype));
        if (shape.EmbeddingLength % shape.HeadCount != 0 || shape.HeadCount % shape.KvHeadCount != 0)
            throw new ArgumentException($"inconsistent heads in {shape}", nameof(shape));
        if (!File.Exists(tokenizerFrom))
            throw new FileNotFoundException("tokenizer source not found", tokenizerFrom);
        LlamaCppRuntime.EnsureInitialized();

        var mark = LlamaCppRuntime.LogPosition;
        var template = LlamaNative.gguf_init_from_file(tokenizerFrom, new GgufInitParams { NoAlloc = true });
        if (template == 0)
            throw LlamaCppRuntime.Failure($"ggml cannot read {tokenizerFrom} as GGUF", mark);
        var gguf = LlamaNative.gguf_init_empty();
        nint ggml = 0;
        try
        {
            LlamaNative.gguf_set_kv(gguf, template);
            var vocab = VocabularySize(tokenizerFrom);
            SetShape(gguf, shape, ftype);

            var tensors = Tensors(shape, vocab);
            var matrixType = ftype == LlamaFtype.F16 ? GgmlF16 : GgmlF32;
            nuint bytes = 0;
            foreach (var (_, ne0, ne1) in tensors)
                bytes += (nuint)(ne0 * ne1 * (ne1 == 1 ? 4 : matrixType == GgmlF16 ? 2 : 4)) + LlamaNative.ggml_tensor_overhead() + 64;
            ggml = LlamaNative.ggml_init(new GgmlInitParams { MemSize = bytes + (1 << 20), NoAlloc = false });
            if (ggml == 0)
                throw LlamaCppRuntime.Failure($"ggml_init could not allocate {bytes} bytes", mark);

            var random = new Random(seed);
            foreach (var (name, ne0, ne1) in tensors)
            {
                var isNorm = ne1 == 1;
                var t = isNorm
                    ? LlamaNative.ggml_new_tensor_1d(ggml, GgmlF32, ne0)
                    : LlamaNative.ggml_new_tensor_2d(ggml, matrixType, ne0, ne1);
                LlamaNative.ggml_set_name(t, name);
                var count = (int)(ne0 * ne1);
                var scale = 1f / MathF.Sqrt(ne0);
                if (isNorm)
                    new Span<float>(LlamaNative.ggml_get_data(t), count).Fill(1f);
                else if (matrixType == GgmlF16)
                {
                    var data = new Span<Half>(LlamaNative.ggml_get_data(t), count);
                    for (var i = 0; i < count; i++)
                        data[i] = (Half)((random.NextSingle() * 2 - 1) * scale);
                }
                else
                {
                    var data = new Span<float>(LlamaNative.ggml_get_data(t), count);
                    for (var i = 0; i < count; i++)
                        data[i] = (random.NextSingle() * 2 - 1) * scale;
                }
                LlamaNative.gguf_add_tensor(gguf, t);
            }
            if (!LlamaNative.gguf_write_to_file(gguf, path, false))
                throw LlamaCppRuntime.Failure($"gguf_write_to_file({path}) failed", mark);
        }
        finally
        {
            if (ggml != 0)
                LlamaNative.ggml_free(ggml);
            LlamaNative.gguf_free(gguf);
            LlamaNative.gguf_free(template);
        }
    }

    const int GgmlF32 = 0, GgmlF16 = 1;

    static void SetShape(nint gguf, RandomLlamaShape s, LlamaFtype ftype)
    {
        LlamaNative.gguf_set_val_str(gguf, "general.name", $"random llama {s.EmbeddingLength}x{s.LayerCount}");
        LlamaNative.gguf_set_val_u32(gguf, "general.file_type", (uint)ftype);
        LlamaNative.gguf_set_val_u32(gguf, "llama.context_length", (uint)s.ContextLength);
        LlamaNative.gguf_set_val_u32(gguf, "llama.embedding_length", (uint)s.EmbeddingLength);
        LlamaNative.gguf_set_val_u32(gguf, "llama.block_count", (uint)s.LayerCount);
        LlamaNative.gguf_set_val_u32(gguf, "llama.feed_forward_length", (uint)s.FeedForwardLength);
        LlamaNative.gguf_set_val_u32(gguf, "llama.rope.dimension_count", (uint)s.HeadSize);
        LlamaNative.gguf_set_val_u32(gguf, "llama.attention.head_count", (uint)s.HeadCount);
        LlamaNative.gguf_set_val_u32(gguf, "llama.attention.head_count_kv", (uint)s.KvHeadCount);
    }

    // Name and ggml shape (ne0 = input width, ne1 = output rows; ne1 = 1 marks a 1-d norm), in llama.cpp's order.
    static List<(string Name, long Ne0, long Ne1)> Tensors(RandomLlamaShape s, int vocab)
    {
        long embd = s.EmbeddingLength, kv = (long)s.KvHeadCount * s.HeadSize, ff = s.FeedForwardLength;
        var list = new List<(string, long, long)> { ("token_embd.weight", embd, vocab) };
        for (var l = 0; l < s.LayerCount; l++)
        {
            list.Add(($"blk.{l}.attn_norm.weight", embd, 1));
            list.Add(($"blk.{l}.attn_q.weight", embd, embd));
            list.Add(($"blk.{l}.attn_k.weight", embd, kv));
            list.Add(($"blk.{l}.attn_v.weight", embd, kv));
            list.Add(($"blk.{l}.attn_output.weight", embd, embd));
            list.Add(($"blk.{l}.ffn_norm.weight", embd, 1));
            list.Add(($"blk.{l}.ffn_gate.weight", embd, ff));
            list.Add(($"blk.{l}.ffn_up.weight", embd, ff));
            list.Add(($"blk.{l}.ffn_down.weight", ff, embd));
        }
        list.Add(("output_norm.weight", embd, 1));
        list.Add(("output.weight", embd, vocab));
        return list;
    }

    // The tokenizer's size decides the embedding and output rows; read it the way llama.cpp will.
    static int VocabularySize(string tokenizerFrom)
    {
        var parameters = LlamaNative.llama_model_default_params();
        parameters.VocabOnly = true;
        var mark = LlamaCppRuntime.LogPosition;
        var model = LlamaNative.llama_model_load_from_file(tokenizerFrom, parameters);
        if (model == 0)
            throw LlamaCppRuntime.Failure($"llama.cpp cannot read the vocabulary of {tokenizerFrom}", mark);
        try
        {
            return LlamaNative.llama_vocab_n_tokens(LlamaNative.llama_model_get_vocab(model));
        }
        finally
        {
            LlamaNative.llama_model_free(model);
        }
    }
}
