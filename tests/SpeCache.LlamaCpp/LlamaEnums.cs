namespace SpeCache.LlamaCpp;

/// <summary>Element type of llama.cpp's K and V caches; the values are ggml's <c>enum ggml_type</c> numbers.</summary>
public enum LlamaCacheType
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    IQ4_NL = 20,
    BF16 = 30,
}

/// <summary><c>enum llama_flash_attn_type</c>. Auto lets llama.cpp probe the backend; a quantized V cache needs it on.</summary>
public enum LlamaFlashAttention
{
    Auto = -1,
    Disabled = 0,
    Enabled = 1,
}

/// <summary><c>enum llama_ftype</c>: the target of llama_model_quantize ("mostly": 1-d tensors such as norms stay F32).</summary>
public enum LlamaFtype
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q2_K = 10,
    Q3_K_S = 11,
    Q3_K_M = 12,
    Q3_K_L = 13,
    Q4_K_S = 14,
    Q4_K_M = 15,
    Q5_K_S = 16,
    Q5_K_M = 17,
    Q6_K = 18,
    IQ4_NL = 25,
    IQ4_XS = 30,
    BF16 = 32,
}

/// <summary><c>enum llama_load_mode</c>: how llama.cpp brings the weights into memory.</summary>
public enum LlamaLoadMode
{
    /// <summary>llama.cpp decides from the device (on a CPU: a memory map).</summary>
    Auto = -1,
    /// <summary>Read the weights into buffers llama.cpp allocates (the command line's --no-mmap).</summary>
    Read = 0,
    Mmap = 1,
}
