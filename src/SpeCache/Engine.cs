using SpeCache.Generation;
using SpeCache.KvCache;
using SpeCache.ModelFiles;
using SpeCache.ModelFiles.Llama2c;
using SpeCache.ModelFiles.Safetensors;
using SpeCache.Tensors;
using SpeCache.Tokenizers;
using SpeCache.Tokenizers.ChatTemplates;
using SpeCache.Transformer;

namespace SpeCache;

public sealed record EngineOptions
{
    /// <summary>Compute threads; 0 uses every core.</summary>
    public int Threads { get; init; }
    /// <summary>Context length per sequence; 0 uses the model's.</summary>
    public int ContextLength { get; init; }
    /// <summary>A tokenizer file for formats that keep it apart from the weights (llama2.c); found beside the model if null.</summary>
    public string? TokenizerPath { get; init; }
    public KvCacheOptions KvCache { get; init; } = new();
    /// <summary>
    /// Read weight matrices straight from the file's memory map instead of copying them into process
    /// memory at load (llama.cpp's --mmap): opens at once and shares pages between processes, but
    /// decodes slower (see <see cref="Tensors.WeightArena"/>).
    /// </summary>
    public bool MapWeights { get; init; }
}

/// <summary>
/// The library's front door: a model file opened, its weights bound to a backend, its tokenizer
/// and chat template ready. Sequences are created from it; it owns the memory map.
/// </summary>
public sealed class Engine : IDisposable
{
    readonly CpuBackend _backend;

    Engine(ModelFile file, EngineOptions options)
    {
        File = file;
        Options = options;
        if (options.Threads < 0) throw new ArgumentOutOfRangeException(nameof(options), "threads must not be negative");
        if (options.ContextLength < 0 || options.ContextLength > file.Config.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(options), $"context length {options.ContextLength} must be between 1 and the model's {file.Config.ContextLength}");
        _backend = new CpuBackend(options.Threads);
        Model = new LlamaModel(file, _backend, options.MapWeights);
        Tokenizer = LoadTokenizer(file, options.TokenizerPath);
        ContextLength = options.ContextLength > 0 ? options.ContextLength : file.Config.ContextLength;
        Generator = new Generator(Model, Tokenizer);
    }

    public ModelFile File { get; }
    public EngineOptions Options { get; }
    public LlamaModel Model { get; }
    public ITokenizer Tokenizer { get; }
    public Generator Generator { get; }
    public int ContextLength { get; }
    public ModelConfig Config => Model.Config;

    public static Engine Load(string modelPath, EngineOptions? options = null)
    {
        var file = ModelLoader.Open(modelPath);
        try
        {
            return new Engine(file, options ?? new EngineOptions());
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>A new, empty KV cache for one sequence, in the engine's policy.</summary>
    public IKvCache CreateCache() => KvCacheFactory.Create(Options.KvCache, Config, ContextLength, Model.Backend.Threads);

    /// <summary>Tokenizes a prompt the way the model expects (BOS if the vocabulary asks for it).</summary>
    public int[] Encode(string text, bool parseSpecial = false) => Tokenizer.Encode(text, Tokenizer.AddBos, parseSpecial);

    /// <summary>
    /// The chat template the model ships (GGUF <c>tokenizer.chat_template</c>, or tokenizer_config.json's
    /// <c>chat_template</c>), parsed; null when it ships none. Parsed on each call, so that a model whose
    /// template we cannot parse still loads for plain completion.
    /// </summary>
    public ChatTemplate? LoadChatTemplate() =>
        File.Metadata.TryGetValue("tokenizer.chat_template", out var t) && t is string source ? ChatTemplate.Parse(source) : null;

    /// <summary>
    /// Renders a conversation with <paramref name="template"/> (asking for the assistant's reply) and
    /// tokenizes it with special tokens recognised; BOS is added when the vocabulary wants it and the
    /// template did not already write it.
    /// </summary>
    public int[] EncodeChat(ChatTemplate template, IReadOnlyList<ChatMessage> messages)
    {
        string bos = Tokenizer.BosToken >= 0 ? Tokenizer.TokenText(Tokenizer.BosToken) : "";
        string eos = Tokenizer.EosToken >= 0 ? Tokenizer.TokenText(Tokenizer.EosToken) : "";
        string rendered = template.Render(messages, addGenerationPrompt: true, bos, eos);
        bool addBos = Tokenizer.AddBos && !(bos.Length > 0 && rendered.StartsWith(bos, StringComparison.Ordinal));
        return Tokenizer.Encode(rendered, addBos, parseSpecial: true);
    }

    static ITokenizer LoadTokenizer(ModelFile file, string? tokenizerPath)
    {
        switch (file)
        {
            case SafetensorsModelFile hf:
                {
                    string json = tokenizerPath ?? Path.Combine(hf.Directory, "tokenizer.json");
                    string config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(json))!, "tokenizer_config.json");
                    return HfTokenizer.Load(json, System.IO.File.Exists(config) ? config : null);
                }
            case Llama2cModelFile:
                return Llama2cTokenizer.Load(tokenizerPath ?? Llama2cModelFile.FindTokenizer(file.Path));
            default:
                return TokenizerFactory.FromGgufMetadata(file.Metadata);
        }
    }

    public void Dispose()
    {
        _backend.Dispose();
        Model.Dispose();
        File.Dispose();
    }
}
