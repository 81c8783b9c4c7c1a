using System.Diagnostics;
using System.Text;
using SpeCache.LlamaCpp.Native;

namespace SpeCache.LlamaCpp;

/// <summary>Timings of one <see cref="LlamaCppModel.Decode"/> run: a prompt prefill, then one token per step.</summary>
/// <param name="GeneratedTokens">The greedy picks fed back one by one (DecodedTokens of them).</param>
public sealed record LlamaCppDecodeTiming(int PromptTokens, TimeSpan Prefill, int DecodedTokens, TimeSpan Decode, int[] GeneratedTokens)
{
    public double PrefillTokensPerSecond => PromptTokens / Prefill.TotalSeconds;
    public double DecodeTokensPerSecond => DecodedTokens / Decode.TotalSeconds;
}

/// <summary>
/// A llama.cpp model with one context (one sequence, one KV cache) on the CPU. Every evaluation entry
/// point starts from an empty cache, so results do not depend on what ran before (<see cref="Append"/>,
/// <see cref="AppendInChunks"/> and <see cref="DecodeAfter"/> say otherwise). Not thread-safe.
/// </summary>
public sealed unsafe class LlamaCppModel : IDisposable
{
    nint model;
    nint context;
    readonly nint vocab;
    LlamaBatch batch;

    // AppendInChunks evaluates each chunk as this sequence, then moves its cells to sequence 0.
    const int ScratchSequence = 1;

    LlamaCppModel(nint model, nint context, int batchCapacity, bool chunkedFill)
    {
        ChunkedFill = chunkedFill;
        this.model = model;
        this.context = context;
        vocab = LlamaNative.llama_model_get_vocab(model);
        BatchCapacity = batchCapacity;
        batch = LlamaNative.llama_batch_init(batchCapacity, 0, 1);
        VocabSize = LlamaNative.llama_vocab_n_tokens(vocab);
        Bos = LlamaNative.llama_vocab_bos(vocab);
        Eos = LlamaNative.llama_vocab_eos(vocab);
        ContextLength = (int)LlamaNative.llama_n_ctx(context);
        Threads = LlamaNative.llama_n_threads(context);
    }

    /// <summary>Loads a GGUF file and creates its context.</summary>
    /// <param name="threads">Threads for both single-token decode and prompt batches.</param>
    /// <param name="contextLength">KV cache length in tokens (llama.cpp may round it up).</param>
    /// <param name="cacheType">K and V cache element type; a quantized V cache needs flash attention, which Auto turns on.</param>
    /// <param name="batchSize">Most tokens per llama_decode call and per graph evaluation.</param>
    /// <param name="loadMode">How the weights come into memory (llama.cpp's default: Auto).</param>
    /// <param name="chunkedFill">
    /// Let <see cref="AppendInChunks"/> run: the cache is one pool of cells that a second, scratch sequence
    /// may share with sequence 0 (llama.cpp's kv_unified with two sequences); its size is unchanged.
    /// </param>
    public static LlamaCppModel Load(string path, int threads = 2, int contextLength = 512,
        LlamaCacheType cacheType = LlamaCacheType.F16, LlamaFlashAttention flashAttention = LlamaFlashAttention.Auto,
        int batchSize = 512, LlamaLoadMode loadMode = LlamaLoadMode.Auto, bool chunkedFill = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (!File.Exists(path))
            throw new FileNotFoundException("model file not found", path);
        LlamaCppRuntime.EnsureInitialized();

        var mark = LlamaCppRuntime.LogPosition;
        var modelParams = LlamaNative.llama_model_default_params();
        modelParams.LoadMode = (int)loadMode;
        var model = LlamaNative.llama_model_load_from_file(path, modelParams);
        if (model == 0)
            throw LlamaCppRuntime.Failure($"llama.cpp could not load {path}", mark);

        var contextParams = LlamaNative.llama_context_default_params();
        contextParams.NCtx = (uint)contextLength;
        contextParams.NBatch = (uint)batchSize;
        contextParams.NUbatch = (uint)batchSize;
        contextParams.NSeqMax = chunkedFill ? 2u : 1u;
        contextParams.KvUnified = chunkedFill;
        contextParams.NThreads = threads;
        contextParams.NThreadsBatch = threads;
        contextParams.TypeK = cacheType;
        contextParams.TypeV = cacheType;
        contextParams.FlashAttnType = flashAttention;
        contextParams.Embeddings = false;
        mark = LlamaCppRuntime.LogPosition;
        var context = LlamaNative.llama_init_from_model(model, contextParams);
        if (context == 0)
        {
            LlamaNative.llama_model_free(model);
            throw LlamaCppRuntime.Failure($"llama.cpp could not create a context for {path} (n_ctx {contextLength}, cache {cacheType})", mark);
        }
        return new LlamaCppModel(model, context, (int)LlamaNative.llama_n_batch(context), chunkedFill);
    }

    public int VocabSize { get; }
    public int Bos { get; }
    public int Eos { get; }

    /// <summary>The context length llama.cpp actually allocated.</summary>
    public int ContextLength { get; }

    public int Threads { get; }

    /// <summary>Most tokens sent to llama_decode at once; longer inputs are split.</summary>
    public int BatchCapacity { get; }

    /// <summary>Loaded with chunkedFill: <see cref="AppendInChunks"/> may run.</summary>
    public bool ChunkedFill { get; }

    public int LayerCount => LlamaNative.llama_model_n_layer(Handle);
    public int EmbeddingLength => LlamaNative.llama_model_n_embd(Handle);
    public LlamaFtype FileType => LlamaNative.llama_model_ftype(Handle);

    /// <summary>llama.cpp's one-line description, e.g. "llama ?B F16".</summary>
    public string Description
    {
        get
        {
            var buf = stackalloc byte[256];
            var n = LlamaNative.llama_model_desc(Handle, buf, 256);
            return n <= 0 ? "" : Encoding.UTF8.GetString(buf, Math.Min(n, 255));
        }
    }

    nint Handle
    {
        get
        {
            ThrowIfDisposed();
            return model;
        }
    }

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(model == 0, this);

    // --- tokens ---

    /// <param name="addSpecial">Add BOS (and EOS) as the model's metadata says.</param>
    /// <param name="parseSpecial">Turn text like "&lt;s&gt;" into the special token rather than plain text.</param>
    public int[] Tokenize(string text, bool addSpecial = true, bool parseSpecial = false)
    {
        ThrowIfDisposed();
        var utf8 = Encoding.UTF8.GetBytes(text);
        var mark = LlamaCppRuntime.LogPosition;
        var tokens = new int[utf8.Length + 2];
        while (true)
        {
            int n;
            fixed (byte* t = utf8)
            fixed (int* o = tokens)
                n = LlamaNative.llama_tokenize(vocab, t, utf8.Length, o, tokens.Length, addSpecial, parseSpecial);
            if (n == int.MinValue)
                throw LlamaCppRuntime.Failure("llama_tokenize overflowed", mark);
            if (n >= 0)
                return tokens[..n];
            tokens = new int[-n];
        }
    }

    /// <summary>The bytes of one token (a byte-fallback token is a single, possibly partial UTF-8 byte).</summary>
    /// <param name="special">Render control tokens such as &lt;s&gt; instead of nothing.</param>
    public byte[] TokenToPieceBytes(int token, bool special = false)
    {
        ThrowIfDisposed();
        CheckToken(token);
        var buf = new byte[32];
        while (true)
        {
            int n;
            fixed (byte* b = buf)
                n = LlamaNative.llama_token_to_piece(vocab, token, b, buf.Length, 0, special);
            if (n >= 0)
                return buf[..n];
            buf = new byte[-n];
        }
    }

    public string TokenToPiece(int token, bool special = false) => Encoding.UTF8.GetString(TokenToPieceBytes(token, special));

    /// <param name="removeSpecial">Drop a leading BOS / trailing EOS the model adds.</param>
    /// <param name="unparseSpecial">Render special tokens as text.</param>
    public string Detokenize(ReadOnlySpan<int> tokens, bool removeSpecial = false, bool unparseSpecial = false)
    {
        ThrowIfDisposed();
        foreach (var t in tokens)
            CheckToken(t);
        var buf = new byte[tokens.Length * 8 + 16];
        while (true)
        {
            int n;
            fixed (int* t = tokens)
            fixed (byte* b = buf)
                n = LlamaNative.llama_detokenize(vocab, t, tokens.Length, b, buf.Length, removeSpecial, unparseSpecial);
            if (n >= 0)
                return Encoding.UTF8.GetString(buf, 0, n);
            buf = new byte[-n];
        }
    }

    // --- evaluation ---

    /// <summary>Empties the KV cache (metadata and data).</summary>
    public void ClearCache()
    {
        LlamaNative.llama_memory_clear(LlamaNative.llama_get_memory(Context), true);
        Position = 0;
    }

    /// <summary>Tokens the KV cache holds: the position the next evaluated token gets.</summary>
    public int Position { get; private set; }

    /// <summary>
    /// Evaluates <paramref name="tokens"/> after what the cache already holds (no clearing), e.g. to fill
    /// the context to some depth before a measurement; returns the time llama.cpp took.
    /// </summary>
    public TimeSpan Append(ReadOnlySpan<int> tokens)
    {
        CheckSequence(tokens, Position);
        var start = Stopwatch.GetTimestamp();
        AppendAs(tokens, sequence: 0);
        return Stopwatch.GetElapsedTime(start);
    }

    // Tokens after the cache's Position as `sequence`, in llama_decode calls of at most BatchCapacity, no logits kept.
    void AppendAs(ReadOnlySpan<int> tokens, int sequence)
    {
        for (var offset = 0; offset < tokens.Length; offset += BatchCapacity)
            DecodeChunk(tokens.Slice(offset, Math.Min(BatchCapacity, tokens.Length - offset)), Position, allLogits: false, sequence);
    }

    /// <summary>
    /// Fills the cache with <paramref name="tokens"/> after what it holds, as <see cref="Append"/> does, except
    /// that each run of <paramref name="chunkLength"/> tokens attends only to itself: it is evaluated as a
    /// scratch sequence and its cells then join sequence 0. The cache ends with the same cells at the same
    /// positions, so every later step reads and attends over exactly what it would after Append, but their
    /// keys and values are not those of one text. For measuring speed at a context depth only: Append costs
    /// time quadratic in the depth, which at 32K tokens and a quantized cache is hours on a small CPU,
    /// while a masked-out cell costs llama.cpp's CPU attention a comparison. Needs a model loaded with chunkedFill.
    /// </summary>
    public TimeSpan AppendInChunks(ReadOnlySpan<int> tokens, int chunkLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkLength, 1);
        if (!ChunkedFill)
            throw new InvalidOperationException("AppendInChunks needs a model loaded with chunkedFill");
        CheckSequence(tokens, Position);
        var memory = LlamaNative.llama_get_memory(Context);
        var start = Stopwatch.GetTimestamp();
        for (var offset = 0; offset < tokens.Length; offset += chunkLength)
        {
            AppendAs(tokens.Slice(offset, Math.Min(chunkLength, tokens.Length - offset)), ScratchSequence);
            LlamaNative.llama_memory_seq_cp(memory, ScratchSequence, 0, -1, -1);
            if (!LlamaNative.llama_memory_seq_rm(memory, ScratchSequence, -1, -1))
                throw new LlamaCppException("llama.cpp could not free the scratch sequence of a chunked fill");
        }
        return Stopwatch.GetElapsedTime(start);
    }

    /// <summary>The lowest and highest position the cache holds for <paramref name="sequence"/>; (-1, -1) when it holds none.</summary>
    public (int Min, int Max) Positions(int sequence = 0)
    {
        var memory = LlamaNative.llama_get_memory(Context);
        return (LlamaNative.llama_memory_seq_pos_min(memory, sequence), LlamaNative.llama_memory_seq_pos_max(memory, sequence));
    }

    /// <summary>
    /// Like <see cref="Decode"/>, but the prompt goes after what the cache already holds instead of into an
    /// empty cache: prefill and decode speed at a context depth.
    /// </summary>
    public LlamaCppDecodeTiming DecodeAfter(ReadOnlySpan<int> prompt, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var picks = Greedy(prompt, count, clear: false, out var prefill, out var decode);
        return new LlamaCppDecodeTiming(prompt.Length, prefill, count, decode, picks[..count]);
    }

    /// <summary>Logits (VocabSize floats) of the last position after evaluating <paramref name="tokens"/> from an empty cache.</summary>
    public float[] Logits(ReadOnlySpan<int> tokens)
    {
        var lastIndex = Prefill(tokens, allLogits: false, clear: true);
        return CopyLogits(lastIndex);
    }

    /// <summary>Logits (VocabSize floats) of the last position after evaluating <paramref name="tokens"/> after what the cache holds.</summary>
    public float[] LogitsAfter(ReadOnlySpan<int> tokens) => CopyLogits(Prefill(tokens, allLogits: false, clear: false));

    /// <summary>Logits of every position (one row of VocabSize per token) from an empty cache.</summary>
    public float[][] AllLogits(ReadOnlySpan<int> tokens)
    {
        CheckSequence(tokens, 0);
        ClearCache();
        var rows = new float[tokens.Length][];
        for (var start = 0; start < tokens.Length; start += BatchCapacity)
        {
            var chunk = tokens.Slice(start, Math.Min(BatchCapacity, tokens.Length - start));
            DecodeChunk(chunk, start, allLogits: true);
            for (var i = 0; i < chunk.Length; i++)
                rows[start + i] = CopyLogits(i);
        }
        return rows;
    }

    /// <summary>
    /// Evaluates the prompt, then picks the highest logit (the lowest id on ties) <paramref name="count"/>
    /// times, feeding each pick back. EOS does not stop it: callers get exactly <paramref name="count"/> tokens.
    /// </summary>
    public int[] GenerateGreedy(int[] prompt, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        // The last pick comes from the logits of the step before it, so count picks take count - 1 steps.
        return count == 0 ? [] : Greedy(prompt, count - 1, clear: true, out _, out _);
    }

    /// <summary>Time to evaluate <paramref name="tokens"/> from an empty cache up to the last position's logits.</summary>
    public TimeSpan TimePrefill(ReadOnlySpan<int> tokens)
    {
        var clock = Stopwatch.StartNew();
        var lastIndex = Prefill(tokens, allLogits: false, clear: true);
        _ = LogitsAt(lastIndex);
        return clock.Elapsed;
    }

    /// <summary>
    /// Prefills <paramref name="prompt"/> from an empty cache, then makes <paramref name="count"/> llama_decode
    /// calls of one token each, feeding back greedy picks. Both times cover llama.cpp's work only (the decode
    /// calls and fetching their logits), not our argmax, so they measure llama.cpp and nothing of ours.
    /// </summary>
    public LlamaCppDecodeTiming Decode(ReadOnlySpan<int> prompt, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var picks = Greedy(prompt, count, clear: true, out var prefill, out var decode);
        return new LlamaCppDecodeTiming(prompt.Length, prefill, count, decode, picks[..count]);
    }

    // Prefill, then `steps` single-token evaluations; returns the steps + 1 greedy picks (the fed tokens and
    // the pick from the last logits). The times exclude the argmax.
    // Without `clear`, the prompt continues the sequence in the cache.
    int[] Greedy(ReadOnlySpan<int> prompt, int steps, bool clear, out TimeSpan prefill, out TimeSpan decode)
    {
        if (prompt.IsEmpty)
            throw new ArgumentException("the prompt needs at least one token", nameof(prompt));
        var first = clear ? 0 : Position;
        CheckSequence(prompt, first + steps);

        var picks = new int[steps + 1];
        var start = Stopwatch.GetTimestamp();
        var logits = LogitsAt(Prefill(prompt, allLogits: false, clear));
        prefill = Stopwatch.GetElapsedTime(start);
        picks[0] = ArgMax(logits);

        long decodeTicks = 0;
        for (var i = 0; i < steps; i++)
        {
            start = Stopwatch.GetTimestamp();
            DecodeChunk([picks[i]], first + prompt.Length + i, allLogits: false);
            logits = LogitsAt(0);
            decodeTicks += Stopwatch.GetTimestamp() - start;
            picks[i + 1] = ArgMax(logits);
        }
        decode = Stopwatch.GetElapsedTime(0, decodeTicks);
        return picks;
    }

    /// <summary>Index of the largest value, the first one on ties.</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
            if (values[i] > values[best])
                best = i;
        return best;
    }

    // Evaluates tokens from an empty cache (or after the cache's tokens without `clear`); returns the
    // batch index of the last token's logits.
    int Prefill(ReadOnlySpan<int> tokens, bool allLogits, bool clear)
    {
        if (tokens.IsEmpty)
            throw new ArgumentException("at least one token is needed", nameof(tokens));
        if (clear)
            ClearCache();
        var first = Position;
        CheckSequence(tokens, first);
        var last = 0;
        for (var start = 0; start < tokens.Length; start += BatchCapacity)
        {
            var chunk = tokens.Slice(start, Math.Min(BatchCapacity, tokens.Length - start));
            DecodeChunk(chunk, first + start, allLogits);
            last = chunk.Length - 1;
        }
        return last;
    }

    // One llama_decode of at most BatchCapacity tokens at positions firstPosition.. of `sequence`.
    // Logits are requested for every token, or only for the chunk's last one.
    void DecodeChunk(ReadOnlySpan<int> tokens, int firstPosition, bool allLogits, int sequence = 0)
    {
        var ctx = Context;
        Debug.Assert(tokens.Length <= BatchCapacity);
        batch.NTokens = tokens.Length;
        for (var i = 0; i < tokens.Length; i++)
        {
            batch.Token[i] = tokens[i];
            batch.Pos[i] = firstPosition + i;
            batch.NSeqId[i] = 1;
            batch.SeqId[i][0] = sequence;
            batch.Logits[i] = (sbyte)(allLogits || i == tokens.Length - 1 ? 1 : 0);
        }
        var mark = LlamaCppRuntime.LogPosition;
        var rc = LlamaNative.llama_decode(ctx, batch);
        if (rc != 0)
            throw LlamaCppRuntime.Failure($"llama_decode returned {rc} ({tokens.Length} tokens at position {firstPosition})", mark);
        Position = firstPosition + tokens.Length;
    }

    Span<float> LogitsAt(int batchIndex)
    {
        var mark = LlamaCppRuntime.LogPosition;
        var p = LlamaNative.llama_get_logits_ith(Context, batchIndex);
        if (p == null)
            throw LlamaCppRuntime.Failure($"llama.cpp has no logits for batch index {batchIndex}", mark);
        return new Span<float>(p, VocabSize);
    }

    float[] CopyLogits(int batchIndex) => LogitsAt(batchIndex).ToArray();

    void CheckSequence(ReadOnlySpan<int> tokens, int extra)
    {
        if (tokens.Length + extra > ContextLength)
            throw new ArgumentException($"{tokens.Length} + {extra} tokens exceed the context length {ContextLength}");
        foreach (var t in tokens)
            CheckToken(t);
    }

    // llama.cpp aborts the process on an out-of-range id; an exception is kinder.
    void CheckToken(int token)
    {
        if ((uint)token >= (uint)VocabSize)
            throw new ArgumentOutOfRangeException(nameof(token), token, $"not a token id (vocabulary has {VocabSize})");
    }

    nint Context
    {
        get
        {
            ThrowIfDisposed();
            return context;
        }
    }

    public void Dispose()
    {
        if (context != 0)
        {
            LlamaNative.llama_batch_free(batch);
            batch = default;
            LlamaNative.llama_free(context);
            context = 0;
        }
        if (model != 0)
        {
            LlamaNative.llama_model_free(model);
            model = 0;
        }
    }
}
