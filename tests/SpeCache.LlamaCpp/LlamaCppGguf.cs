using SpeCache.LlamaCpp.Native;

namespace SpeCache.LlamaCpp;

/// <summary>ggml's own GGUF reader, to see what llama.cpp wrote (e.g. which tensors a quantization really changed).</summary>
public static unsafe class LlamaCppGguf
{
    /// <summary>Tensor name to ggml type name ("f32", "f16", "q8_0", "q6_K", ...), in file order.</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> TensorTypes(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException("GGUF file not found", path);
        LlamaCppRuntime.EnsureInitialized();
        var mark = LlamaCppRuntime.LogPosition;
        var gguf = LlamaNative.gguf_init_from_file(path, new GgufInitParams { NoAlloc = true, Ctx = 0 });
        if (gguf == 0)
            throw LlamaCppRuntime.Failure($"ggml cannot read {path} as GGUF", mark);
        try
        {
            var n = LlamaNative.gguf_get_n_tensors(gguf);
            var result = new List<KeyValuePair<string, string>>((int)n);
            for (long i = 0; i < n; i++)
                result.Add(new(
                    LlamaCppRuntime.Utf8(LlamaNative.gguf_get_tensor_name(gguf, i)),
                    LlamaCppRuntime.Utf8(LlamaNative.ggml_type_name(LlamaNative.gguf_get_tensor_type(gguf, i)))));
            return result;
        }
        finally
        {
            LlamaNative.gguf_free(gguf);
        }
    }
}
