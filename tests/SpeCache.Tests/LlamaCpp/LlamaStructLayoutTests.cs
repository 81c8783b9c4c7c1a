using System.Runtime.CompilerServices;
using SpeCache.LlamaCpp;
using SpeCache.LlamaCpp.Native;

namespace SpeCache.Tests.LlamaCpp;

/// <summary>
/// The managed mirrors of llama.h's structs must match the pinned release byte for byte, or every call
/// passing them by value reads garbage.
/// </summary>
public class LlamaStructLayoutTests
{
    // Sizes and offsets printed by a C program compiled (gcc -std=c11 and g++ -std=c++17, same output) with
    //   -I peer/llama.cpp/include -I peer/llama.cpp/ggml/include
    // doing printf("%zu", sizeof(struct llama_model_params)) and offsetof(...) for each struct below,
    // on linux-x64 against node-llama-cpp 3.22.1's llama.cpp source (release "v0.5.0").
    const int ModelParamsSize = 80;          // vocab_only @ 72, load_mtp @ 77
    const int ContextParamsSize = 160;       // flash_attn_type @ 52, type_k @ 104, embeddings @ 128, ctx_other @ 152
    const int QuantizeParamsSize = 64;       // allow_requantize @ 16, imatrix @ 24, max_buf_size @ 56
    const int BatchSize = 56;                // token @ 8, logits @ 48
    const int GgufInitParamsSize = 16;       // ctx @ 8
    const int GgmlInitParamsSize = 24;       // no_alloc @ 16

    [Fact]
    public void SizesMatchTheCCompiler()
    {
        Assert.Equal(ModelParamsSize, Unsafe.SizeOf<LlamaModelParams>());
        Assert.Equal(ContextParamsSize, Unsafe.SizeOf<LlamaContextParams>());
        Assert.Equal(QuantizeParamsSize, Unsafe.SizeOf<LlamaModelQuantizeParams>());
        Assert.Equal(BatchSize, Unsafe.SizeOf<LlamaBatch>());
        Assert.Equal(GgufInitParamsSize, Unsafe.SizeOf<GgufInitParams>());
        Assert.Equal(GgmlInitParamsSize, Unsafe.SizeOf<GgmlInitParams>());
    }

    [Fact]
    public unsafe void OffsetsMatchTheCCompiler()
    {
        var m = default(LlamaModelParams);
        Assert.Equal(72, Offset(ref m, ref m.VocabOnly));
        Assert.Equal(77, Offset(ref m, ref m.LoadMtp));
        Assert.Equal(40, Offset(ref m, ref m.TensorSplit));

        var c = default(LlamaContextParams);
        Assert.Equal(28, Offset(ref c, ref c.NThreads));
        Assert.Equal(52, Offset(ref c, ref c.FlashAttnType));
        Assert.Equal(84, Offset(ref c, ref c.DefragThold));
        Assert.Equal(104, Offset(ref c, ref c.TypeK));
        Assert.Equal(128, Offset(ref c, ref c.Embeddings));
        Assert.Equal(133, Offset(ref c, ref c.KvUnified));
        Assert.Equal(152, Offset(ref c, ref c.CtxOther));

        var q = default(LlamaModelQuantizeParams);
        Assert.Equal(16, Offset(ref q, ref q.AllowRequantize));
        Assert.Equal(21, Offset(ref q, ref q.DryRun));
        Assert.Equal(56, Offset(ref q, ref q.MaxBufSize));

        var b = default(LlamaBatch);
        Assert.Equal(8, (int)((byte*)&b.Token - (byte*)&b));
        Assert.Equal(48, (int)((byte*)&b.Logits - (byte*)&b));
    }

    // The defaults as llama.cpp's own functions return them (src/llama-context.cpp, llama-model.cpp,
    // llama-quant.cpp): distinctive values on both sides of each padding hole, so a shifted field shows.
    [Fact]
    public void DefaultParamsReadBackAsInTheSource()
    {
        LlamaCppRuntime.EnsureInitialized();

        var m = LlamaNative.llama_model_default_params();
        Assert.Equal(-1, m.NGpuLayers);
        Assert.Equal(1, m.SplitMode);            // LLAMA_SPLIT_MODE_LAYER
        Assert.Equal(-1, m.LoadMode);            // LLAMA_LOAD_MODE_AUTO
        Assert.Equal(1, m.LazyMode);             // LLAMA_LAZY_MODE_AUTO
        Assert.Equal(0, m.TensorSplit);
        Assert.False(m.VocabOnly);
        Assert.True(m.UseExtraBufts);
        Assert.False(m.LoadMtp);

        var c = LlamaNative.llama_context_default_params();
        Assert.Equal(512u, c.NCtx);
        Assert.Equal(2048u, c.NBatch);
        Assert.Equal(512u, c.NUbatch);
        Assert.Equal(1u, c.NSeqMax);
        Assert.Equal(1u, c.NOutputsMaxPerSeq);
        Assert.Equal(LlamaFlashAttention.Auto, c.FlashAttnType);
        Assert.Equal(-1f, c.YarnExtFactor);
        Assert.Equal(-1f, c.DefragThold);
        Assert.Equal(LlamaCacheType.F16, c.TypeK);
        Assert.Equal(LlamaCacheType.F16, c.TypeV);
        Assert.Equal(0, c.AbortCallback);
        Assert.False(c.Embeddings);
        Assert.True(c.OffloadKqv);
        Assert.True(c.NoPerf);
        Assert.True(c.SwaFull);
        Assert.False(c.KvUnified);
        Assert.Equal(0, c.CtxOther);

        var q = LlamaNative.llama_model_quantize_default_params();
        Assert.Equal(0, q.NThread);
        Assert.Equal(LlamaFtype.Q8_0, q.Ftype);
        Assert.Equal(43, q.OutputTensorType);    // GGML_TYPE_COUNT: chosen by the ftype
        Assert.Equal(43, q.TokenEmbeddingType);
        Assert.False(q.AllowRequantize);
        Assert.True(q.QuantizeOutputTensor);
        Assert.False(q.DryRun);
        Assert.Equal(0, q.Imatrix);
        Assert.NotEqual(0u, q.MaxBufSize);
    }

    static int Offset<TStruct, TField>(ref TStruct owner, ref TField field) =>
        (int)Unsafe.ByteOffset(ref Unsafe.As<TStruct, byte>(ref owner), ref Unsafe.As<TField, byte>(ref field));
}
