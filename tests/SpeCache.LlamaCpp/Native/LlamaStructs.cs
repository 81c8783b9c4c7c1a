using System.Runtime.InteropServices;

// Structs cross the boundary by value exactly as laid out here; with runtime marshalling off, `bool`
// is one byte like C's and nothing is copied field by field behind our back.
[assembly: System.Runtime.CompilerServices.DisableRuntimeMarshalling]

namespace SpeCache.LlamaCpp.Native;

// Mirrors of the C structs in peer/llama.cpp/include/llama.h of the pinned release, field for field
// and in order. Sizes are checked by LlamaStructLayoutTests against values from a C compiler; field
// values are checked against llama.cpp's own *_default_params at run time.

/// <summary><c>struct llama_model_params</c> (80 bytes on x64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct LlamaModelParams
{
    public nint Devices;               // ggml_backend_dev_t *: NULL = every loaded device
    public nint TensorBuftOverrides;   // const llama_model_tensor_buft_override *
    public int NGpuLayers;
    public int SplitMode;              // enum llama_split_mode
    public int LoadMode;               // enum llama_load_mode (-1 auto, 1 mmap, ...)
    public int LazyMode;               // enum llama_lazy_mode
    public int MainGpu;
    public nint TensorSplit;           // const float *
    public nint ProgressCallback;      // llama_progress_callback
    public nint ProgressCallbackUserData;
    public nint KvOverrides;           // const llama_model_kv_override *
    public bool VocabOnly;
    public bool CheckTensors;
    public bool UseExtraBufts;
    public bool NoHost;
    public bool NoAlloc;
    public bool LoadMtp;
}

/// <summary><c>struct llama_context_params</c> (160 bytes on x64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct LlamaContextParams
{
    public uint NCtx;
    public uint NBatch;                // most tokens one llama_decode call may carry
    public uint NUbatch;               // most tokens one graph evaluation carries
    public uint NSeqMax;
    public uint NRsSeq;
    public uint NOutputsMax;
    public uint NOutputsMaxPerSeq;
    public int NThreads;               // threads for single-token decode
    public int NThreadsBatch;          // threads for prompt (batch) processing
    public int CtxType;                // enum llama_context_type
    public int RopeScalingType;        // enum llama_rope_scaling_type
    public int PoolingType;            // enum llama_pooling_type
    public int AttentionType;          // enum llama_attention_type
    public LlamaFlashAttention FlashAttnType;
    public float RopeFreqBase;
    public float RopeFreqScale;
    public float YarnExtFactor;
    public float YarnAttnFactor;
    public float YarnBetaFast;
    public float YarnBetaSlow;
    public uint YarnOrigCtx;
    public float DefragThold;
    public nint CbEval;                // ggml_backend_sched_eval_callback
    public nint CbEvalUserData;
    public LlamaCacheType TypeK;       // enum ggml_type
    public LlamaCacheType TypeV;       // enum ggml_type
    public nint AbortCallback;         // ggml_abort_callback
    public nint AbortCallbackData;
    public bool Embeddings;
    public bool OffloadKqv;
    public bool NoPerf;
    public bool OpOffload;
    public bool SwaFull;
    public bool KvUnified;
    public nint Samplers;              // llama_sampler_seq_config *
    public nuint NSamplers;
    public nint CtxOther;              // llama_context *
}

/// <summary><c>llama_model_quantize_params</c> (64 bytes on x64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct LlamaModelQuantizeParams
{
    public int NThread;                // <= 0: hardware_concurrency
    public LlamaFtype Ftype;
    public int OutputTensorType;       // enum ggml_type; GGML_TYPE_COUNT = choose by ftype
    public int TokenEmbeddingType;     // enum ggml_type; GGML_TYPE_COUNT = choose by ftype
    public bool AllowRequantize;
    public bool QuantizeOutputTensor;
    public bool OnlyCopy;
    public bool Pure;
    public bool KeepSplit;
    public bool DryRun;
    public nint Imatrix;               // const llama_model_imatrix_data *
    public nint KvOverrides;           // const llama_model_kv_override *
    public nint TtOverrides;           // const llama_model_tensor_override *
    public nint PruneLayers;           // const int32_t *
    public nuint MaxBufSize;
}

/// <summary><c>struct llama_batch</c> (56 bytes on x64); its arrays are allocated by llama_batch_init.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct LlamaBatch
{
    public int NTokens;
    public int* Token;
    public float* Embd;
    public int* Pos;
    public int* NSeqId;
    public int** SeqId;
    public sbyte* Logits;              // non-zero: produce logits for this position
}

/// <summary><c>struct gguf_init_params</c> (16 bytes on x64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GgufInitParams
{
    public bool NoAlloc;
    public nint Ctx;                   // struct ggml_context **: NULL = read metadata only
}

/// <summary><c>struct ggml_init_params</c> (24 bytes on x64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GgmlInitParams
{
    public nuint MemSize;              // bytes of the context's arena
    public nint MemBuffer;             // NULL: ggml allocates it
    public bool NoAlloc;               // true: tensors get no data
}
