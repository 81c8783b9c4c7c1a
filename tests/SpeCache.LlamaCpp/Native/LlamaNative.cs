using System.Runtime.InteropServices;

namespace SpeCache.LlamaCpp.Native;

/// <summary>
/// The C functions of libllama and libggml that the wrapper uses, declared as in llama.h / ggml-backend.h.
/// The library names are logical: <see cref="PeerLibraries"/> resolves them to files in the peer folder,
/// so nothing here may be called before <see cref="LlamaCppRuntime.EnsureInitialized"/>.
/// </summary>
internal static unsafe partial class LlamaNative
{
    public const string Llama = "llama";
    public const string Ggml = "ggml";
    public const string GgmlBase = "ggml-base";

    // --- backends (libggml holds the registry, libggml-base the device/registry accessors) ---

    [LibraryImport(Ggml, StringMarshalling = StringMarshalling.Utf8)]
    public static partial void ggml_backend_load_all_from_path(string dirPath);

    [LibraryImport(Ggml, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint ggml_backend_load(string path);

    [LibraryImport(Ggml)]
    public static partial nuint ggml_backend_reg_count();

    [LibraryImport(Ggml)]
    public static partial nint ggml_backend_reg_get(nuint index);

    [LibraryImport(Ggml)]
    public static partial nuint ggml_backend_dev_count();

    [LibraryImport(Ggml)]
    public static partial nint ggml_backend_dev_get(nuint index);

    [LibraryImport(GgmlBase)]
    public static partial byte* ggml_backend_reg_name(nint reg);

    [LibraryImport(GgmlBase)]
    public static partial byte* ggml_backend_dev_name(nint device);

    [LibraryImport(GgmlBase)]
    public static partial byte* ggml_backend_dev_description(nint device);

    // --- GGUF files (libggml-base) ---

    [LibraryImport(GgmlBase, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint gguf_init_from_file(string fname, GgufInitParams parameters);

    [LibraryImport(GgmlBase)]
    public static partial void gguf_free(nint ctx);

    [LibraryImport(GgmlBase)]
    public static partial long gguf_get_n_tensors(nint ctx);

    [LibraryImport(GgmlBase)]
    public static partial byte* gguf_get_tensor_name(nint ctx, long tensorId);

    [LibraryImport(GgmlBase)]
    public static partial int gguf_get_tensor_type(nint ctx, long tensorId);

    [LibraryImport(GgmlBase)]
    public static partial byte* ggml_type_name(int type);

    [LibraryImport(GgmlBase)]
    public static partial nint gguf_init_empty();

    /// <summary>Copies every key/value pair of <paramref name="src"/> into <paramref name="ctx"/>.</summary>
    [LibraryImport(GgmlBase)]
    public static partial void gguf_set_kv(nint ctx, nint src);

    [LibraryImport(GgmlBase, StringMarshalling = StringMarshalling.Utf8)]
    public static partial void gguf_set_val_u32(nint ctx, string key, uint value);

    [LibraryImport(GgmlBase, StringMarshalling = StringMarshalling.Utf8)]
    public static partial void gguf_set_val_str(nint ctx, string key, string value);

    [LibraryImport(GgmlBase)]
    public static partial void gguf_add_tensor(nint ctx, nint tensor);

    [LibraryImport(GgmlBase, StringMarshalling = StringMarshalling.Utf8)]
    [return: MarshalAs(UnmanagedType.U1)]
    public static partial bool gguf_write_to_file(nint ctx, string fname, [MarshalAs(UnmanagedType.U1)] bool onlyMeta);

    // --- ggml tensors, only to hand data to gguf_add_tensor ---

    [LibraryImport(GgmlBase)]
    public static partial nint ggml_init(GgmlInitParams parameters);

    [LibraryImport(GgmlBase)]
    public static partial void ggml_free(nint ctx);

    [LibraryImport(GgmlBase)]
    public static partial nuint ggml_tensor_overhead();

    [LibraryImport(GgmlBase)]
    public static partial nint ggml_new_tensor_1d(nint ctx, int type, long ne0);

    [LibraryImport(GgmlBase)]
    public static partial nint ggml_new_tensor_2d(nint ctx, int type, long ne0, long ne1);

    [LibraryImport(GgmlBase, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint ggml_set_name(nint tensor, string name);

    [LibraryImport(GgmlBase)]
    public static partial void* ggml_get_data(nint tensor);

    // --- process-wide ---

    [LibraryImport(Llama)]
    public static partial void llama_backend_init();

    /// <summary>Also installs the callback for ggml's own messages (llama_log_set calls ggml_log_set).</summary>
    [LibraryImport(Llama)]
    public static partial void llama_log_set(delegate* unmanaged[Cdecl]<int, byte*, void*, void> callback, void* userData);

    [LibraryImport(Llama)]
    public static partial byte* llama_print_system_info();

    [LibraryImport(Llama)]
    public static partial LlamaModelParams llama_model_default_params();

    [LibraryImport(Llama)]
    public static partial LlamaContextParams llama_context_default_params();

    [LibraryImport(Llama)]
    public static partial LlamaModelQuantizeParams llama_model_quantize_default_params();

    // --- model ---

    [LibraryImport(Llama, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint llama_model_load_from_file(string pathModel, LlamaModelParams parameters);

    [LibraryImport(Llama)]
    public static partial void llama_model_free(nint model);

    [LibraryImport(Llama)]
    public static partial nint llama_model_get_vocab(nint model);

    [LibraryImport(Llama)]
    public static partial int llama_model_n_layer(nint model);

    [LibraryImport(Llama)]
    public static partial int llama_model_n_embd(nint model);

    [LibraryImport(Llama)]
    public static partial LlamaFtype llama_model_ftype(nint model);

    [LibraryImport(Llama)]
    public static partial int llama_model_desc(nint model, byte* buf, nuint bufSize);

    /// <summary>Returns 0 on success; errors are logged, not thrown.</summary>
    [LibraryImport(Llama, StringMarshalling = StringMarshalling.Utf8)]
    public static partial uint llama_model_quantize(string fnameInp, string fnameOut, LlamaModelQuantizeParams* parameters);

    // --- vocabulary ---

    [LibraryImport(Llama)]
    public static partial int llama_vocab_n_tokens(nint vocab);

    [LibraryImport(Llama)]
    public static partial int llama_vocab_type(nint vocab);

    [LibraryImport(Llama)]
    public static partial int llama_vocab_bos(nint vocab);

    [LibraryImport(Llama)]
    public static partial int llama_vocab_eos(nint vocab);

    /// <summary>Returns the token count, or minus the count needed when <paramref name="nTokensMax"/> is too small.</summary>
    [LibraryImport(Llama)]
    public static partial int llama_tokenize(nint vocab, byte* text, int textLen, int* tokens, int nTokensMax,
        [MarshalAs(UnmanagedType.U1)] bool addSpecial, [MarshalAs(UnmanagedType.U1)] bool parseSpecial);

    /// <summary>Returns the byte count (no terminator), or minus the size needed.</summary>
    [LibraryImport(Llama)]
    public static partial int llama_token_to_piece(nint vocab, int token, byte* buf, int length, int lstrip,
        [MarshalAs(UnmanagedType.U1)] bool special);

    /// <summary>Returns the byte count, or minus the size needed.</summary>
    [LibraryImport(Llama)]
    public static partial int llama_detokenize(nint vocab, int* tokens, int nTokens, byte* text, int textLenMax,
        [MarshalAs(UnmanagedType.U1)] bool removeSpecial, [MarshalAs(UnmanagedType.U1)] bool unparseSpecial);

    // --- context, batch, decode ---

    [LibraryImport(Llama)]
    public static partial nint llama_init_from_model(nint model, LlamaContextParams parameters);

    [LibraryImport(Llama)]
    public static partial void llama_free(nint ctx);

    [LibraryImport(Llama)]
    public static partial uint llama_n_ctx(nint ctx);

    [LibraryImport(Llama)]
    public static partial uint llama_n_batch(nint ctx);

    [LibraryImport(Llama)]
    public static partial uint llama_n_ubatch(nint ctx);

    [LibraryImport(Llama)]
    public static partial int llama_n_threads(nint ctx);

    [LibraryImport(Llama)]
    public static partial int llama_n_threads_batch(nint ctx);

    [LibraryImport(Llama)]
    public static partial LlamaBatch llama_batch_init(int nTokens, int embd, int nSeqMax);

    [LibraryImport(Llama)]
    public static partial void llama_batch_free(LlamaBatch batch);

    /// <summary>0 = success, 1 = no KV slot, 2 = aborted, -1 = invalid batch, &lt; -1 = fatal.</summary>
    [LibraryImport(Llama)]
    public static partial int llama_decode(nint ctx, LlamaBatch batch);

    [LibraryImport(Llama)]
    public static partial void llama_synchronize(nint ctx);

    /// <summary>Logits of the i-th token of the last batch (which must have asked for them); NULL if it did not.</summary>
    [LibraryImport(Llama)]
    public static partial float* llama_get_logits_ith(nint ctx, int i);

    [LibraryImport(Llama)]
    public static partial nint llama_get_memory(nint ctx);

    [LibraryImport(Llama)]
    public static partial void llama_memory_clear(nint memory, [MarshalAs(UnmanagedType.U1)] bool data);

    [LibraryImport(Llama)]
    public static partial int llama_memory_seq_pos_max(nint memory, int seqId);

    [LibraryImport(Llama)]
    public static partial int llama_memory_seq_pos_min(nint memory, int seqId);

    /// <summary>Adds <paramref name="dstSeqId"/> to the cells of <paramref name="srcSeqId"/> at positions [p0, p1) (negative: open).</summary>
    [LibraryImport(Llama)]
    public static partial void llama_memory_seq_cp(nint memory, int srcSeqId, int dstSeqId, int p0, int p1);

    /// <summary>Removes the sequence from its cells at positions [p0, p1); false if a partial removal is impossible.</summary>
    [LibraryImport(Llama)]
    [return: MarshalAs(UnmanagedType.U1)]
    public static partial bool llama_memory_seq_rm(nint memory, int seqId, int p0, int p1);
}
