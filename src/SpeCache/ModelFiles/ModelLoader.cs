using SpeCache.ModelFiles.Gguf;
using SpeCache.ModelFiles.Llama2c;
using SpeCache.ModelFiles.Safetensors;

namespace SpeCache.ModelFiles;

/// <summary>Opens a model in whichever format it is: GGUF, a Hugging Face folder, or a llama2.c checkpoint.</summary>
public static class ModelLoader
{
    public static ModelFile Open(string path)
    {
        if (Directory.Exists(path) || path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            return SafetensorsModelFile.Open(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"model file not found: {path}", path);
        Span<byte> magic = stackalloc byte[4];
        using (var stream = File.OpenRead(path))
        {
            if (stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false) < 4)
                throw new InvalidDataException($"{path}: too short to be a model file");
        }
        if (magic.SequenceEqual("GGUF"u8))
            return GgufModelFile.Open(path);
        if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"{path}: not a GGUF file (bad magic)");
        // llama2.c checkpoints have no magic; the reader checks that the header is plausible.
        return Llama2cModelFile.Open(path);
    }
}
