using System.Runtime.InteropServices;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Quants;
using SpeCache.Tensors;
using SpeCache.Transformer;

namespace SpeCache.ModelFiles.Conversion;

/// <summary>
/// Writes any opened <see cref="ModelFile"/> as a GGUF that llama.cpp loads: the <c>{arch}.*</c> keys
/// from the config, tokenizer and general metadata carried over, 2-D weights re-encoded row by row
/// (never the whole model in memory), 1-D tensors as F32, and Q/K rows moved to the RoPE pair layout
/// the target architecture implies.
/// </summary>
public static class GgufConverter
{
    // Keys the converter derives itself; copying them from the source could contradict the new file.
    static readonly string[] DerivedKeys = ["general.architecture", "general.alignment", "general.file_type", "general.quantization_version"];

    /// <summary>Converts <paramref name="source"/>; returns notes about choices made (tensors kept F16, permutations, generated tensors).</summary>
    public static IReadOnlyList<string> Write(ModelFile source, string outputPath, GgmlType weightType,
        IReadOnlyDictionary<string, object> extraMetadata, IProgress<double>? progress = null)
    {
        var config = source.Config;
        config.Validate();
        string arch = TargetArchitecture(config.Architecture);
        RequireEncodable(weightType);
        LlamaTensorLayout.Validate(config, source.Tensors);

        var notes = new List<string>();
        // GGUF "llama" means adjacent RoPE pairs; qwen2/qwen3 mean NeoX pairs (llama_model_rope_type).
        var targetLayout = arch == "llama" ? RopeLayout.Interleaved : RopeLayout.NeoX;
        bool permute = config.RopeLayout != targetLayout;
        if (permute)
            notes.Add($"Q and K rows permuted per head from {config.RopeLayout} to {targetLayout} RoPE pairs (GGUF '{arch}')");

        var plan = new List<PlannedTensor>();
        foreach (var (name, shape) in LlamaTensorLayout.Required(config))
        {
            var tensor = source.Tensor(name);
            var type = shape.Length == 1 ? GgmlType.F32 : weightType;
            if (shape.Length > 1 && shape[0] % GgmlTypeInfo.Geometry(type).BlockSize != 0)
            {
                notes.Add($"tensor '{name}' kept F16: its rows of {shape[0]} are not whole {GgmlTypeInfo.Name(type)} blocks");
                type = GgmlType.F16;
            }
            plan.Add(new PlannedTensor(name, type, shape, tensor, null, permute && IsRotated(name)));
        }
        if (source.TryTensor(LlamaTensorLayout.RopeFreqs) is { } freqs)
            plan.Add(new PlannedTensor(freqs.Name, GgmlType.F32, [freqs.Shape[0]], freqs, null, false));
        else if (config.RopeScaling is { } scaling && arch == "llama")
        {
            plan.Add(new PlannedTensor(LlamaTensorLayout.RopeFreqs, GgmlType.F32, [config.RopeDim / 2], null, Llama3RopeFactors(config, scaling), false));
            notes.Add($"'{LlamaTensorLayout.RopeFreqs}' generated from the llama3 rope scaling (factor {scaling.Factor})");
        }

        using var writer = new GgufWriter(outputPath);
        WriteMetadata(writer, source, arch, weightType, extraMetadata);
        foreach (var t in plan) writer.AddTensor(t.Name, t.Type, t.Shape);

        double totalRows = 0;
        foreach (var t in plan) totalRows += RowCount(t.Shape);
        double doneRows = 0;
        foreach (var t in plan)
        {
            if (t.Generated != null)
                writer.WriteTensorData(MemoryMarshal.AsBytes(t.Generated.AsSpan()));
            else if (t.Shape.Length == 1)
                WriteVector(writer, t, config);
            else
                WriteMatrix(writer, t, config);
            doneRows += RowCount(t.Shape);
            progress?.Report(doneRows / totalRows);
        }
        writer.Finish();
        return notes;
    }

    /// <summary>GGUF architecture for a config's; Mistral is written as "llama", as llama.cpp's converter does.</summary>
    public static string TargetArchitecture(string architecture) => architecture switch
    {
        "llama" or "mistral" => "llama",
        "qwen2" or "qwen3" => architecture,
        _ => throw new NotSupportedException($"architecture '{architecture}' cannot be written as GGUF (supported: llama, mistral, qwen2, qwen3)"),
    };

    sealed record PlannedTensor(string Name, GgmlType Type, long[] Shape, WeightTensor? Source, float[]? Generated, bool Permute);

    static bool IsRotated(string name) =>
        name.EndsWith(".attn_q.weight") || name.EndsWith(".attn_k.weight") ||
        name.EndsWith(".attn_q.bias") || name.EndsWith(".attn_k.bias") ||
        name.EndsWith(".attn_q_norm.weight") || name.EndsWith(".attn_k_norm.weight");

    static long RowCount(long[] shape)
    {
        long rows = 1;
        for (int d = 1; d < shape.Length; d++) rows *= shape[d];
        return rows;
    }

    /// <summary>Source row that goes to <paramref name="row"/> of the output, for tensors whose rows (or elements) are head dimensions.</summary>
    static long SourceRow(PlannedTensor t, long row, ModelConfig config)
    {
        if (!t.Permute) return row;
        return config.RopeLayout == RopeLayout.NeoX
            ? RopePermutation.NeoXRowForInterleaved(row, config.HeadDim, config.RopeDim)
            : RopePermutation.InterleavedRowForNeoX(row, config.HeadDim, config.RopeDim);
    }

    static void WriteMatrix(GgufWriter writer, PlannedTensor t, ModelConfig config)
    {
        var source = t.Source!;
        var values = new float[source.Cols];
        var encoded = new byte[GgmlTypeInfo.RowBytes(t.Type, source.Cols)];
        for (long row = 0; row < source.Rows; row++)
        {
            WeightFormats.DequantizeRow(source.Type, source.Row(SourceRow(t, row, config)), values);
            WeightFormats.QuantizeRow(t.Type, values, encoded);
            writer.WriteTensorData(encoded);
        }
    }

    static void WriteVector(GgufWriter writer, PlannedTensor t, ModelConfig config)
    {
        var source = t.Source!;
        var values = new float[source.Cols];
        WeightFormats.DequantizeRow(source.Type, source.Row(0), values);
        var output = values;
        if (t.Permute)
        {
            // A bias or norm holds one value per output row of its projection, so it moves like the rows do.
            output = new float[values.Length];
            for (long i = 0; i < output.Length; i++) output[i] = values[SourceRow(t, i, config)];
        }
        writer.WriteTensorData(MemoryMarshal.AsBytes(output.AsSpan()));
    }

    static void WriteMetadata(GgufWriter writer, ModelFile source, string arch, GgmlType weightType, IReadOnlyDictionary<string, object> extra)
    {
        var c = source.Config;
        writer.SetMetadata("general.architecture", arch);
        writer.SetMetadata("general.name", source.Metadata.TryGetString("general.name", out var name) ? name : Path.GetFileNameWithoutExtension(source.Path));
        foreach (var (key, value) in source.Metadata)
        {
            if (DerivedKeys.Contains(key) || key.StartsWith(c.Architecture + ".") || key.StartsWith(arch + "."))
                continue;
            writer.SetMetadata(key, value);
        }
        WriteShapeMetadata(writer, c, arch, weightType);
        foreach (var (key, value) in extra)
            writer.SetMetadata(key, value);
    }

    /// <summary>
    /// The <c>{arch}.*</c> shape keys, file type and quantization version of a file whose matrices are
    /// <paramref name="weightType"/>; shared with the synthetic model writer.
    /// </summary>
    internal static void WriteShapeMetadata(GgufWriter writer, ModelConfig c, string arch, GgmlType weightType)
    {
        // llama.cpp checks these keys' exact types: counts are u32, floats f32.
        writer.SetMetadata($"{arch}.vocab_size", (uint)c.VocabSize);
        writer.SetMetadata($"{arch}.context_length", (uint)c.ContextLength);
        writer.SetMetadata($"{arch}.embedding_length", (uint)c.Dim);
        writer.SetMetadata($"{arch}.block_count", (uint)c.LayerCount);
        writer.SetMetadata($"{arch}.feed_forward_length", (uint)c.HiddenDim);
        writer.SetMetadata($"{arch}.attention.head_count", (uint)c.HeadCount);
        writer.SetMetadata($"{arch}.attention.head_count_kv", (uint)c.KvHeadCount);
        writer.SetMetadata($"{arch}.attention.layer_norm_rms_epsilon", c.RmsNormEps);
        writer.SetMetadata($"{arch}.rope.freq_base", c.RopeTheta);
        writer.SetMetadata($"{arch}.rope.dimension_count", (uint)c.RopeDim);
        if (c.HeadDim != c.Dim / c.HeadCount)
        {
            writer.SetMetadata($"{arch}.attention.key_length", (uint)c.HeadDim);
            writer.SetMetadata($"{arch}.attention.value_length", (uint)c.HeadDim);
        }
        if (FileType(weightType) is { } fileType)
            writer.SetMetadata("general.file_type", fileType);
        writer.SetMetadata("general.quantization_version", 2u);
    }

    /// <summary>llama.cpp's llama_ftype for a file whose matrices are all <paramref name="type"/> (informational only).</summary>
    static uint? FileType(GgmlType type) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q4_0 => 2,
        GgmlType.Q8_0 => 7,
        GgmlType.Q4_K => 14, // Q4_K_S: every matrix Q4_K
        GgmlType.Q6_K => 18,
        GgmlType.BF16 => 32,
        _ => null,
    };

    /// <summary>Fails before any file is created if <see cref="WeightFormats.QuantizeRow"/> cannot produce the type.</summary>
    static void RequireEncodable(GgmlType type)
    {
        if (!GgmlTypeInfo.IsSupportedWeight(type))
            throw new NotSupportedException($"cannot convert to {GgmlTypeInfo.Name(type)} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
        var (block, size) = GgmlTypeInfo.Geometry(type);
        WeightFormats.QuantizeRow(type, new float[block], new byte[size]);
    }

    /// <summary>Per-pair frequency divisors of Llama 3.x "llama3" rope scaling, as llama.cpp's converter computes them.</summary>
    public static float[] Llama3RopeFactors(ModelConfig config, Llama3RopeScaling scaling)
    {
        var factors = new float[config.RopeDim / 2];
        double lowFreqWavelen = scaling.OriginalContextLength / scaling.LowFreqFactor;
        double highFreqWavelen = scaling.OriginalContextLength / scaling.HighFreqFactor;
        for (int i = 0; i < factors.Length; i++)
        {
            double freq = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.RopeDim);
            double wavelen = 2 * Math.PI / freq;
            if (wavelen < highFreqWavelen)
                factors[i] = 1;
            else if (wavelen > lowFreqWavelen)
                factors[i] = scaling.Factor;
            else
            {
                double smooth = (scaling.OriginalContextLength / wavelen - scaling.LowFreqFactor) / (scaling.HighFreqFactor - scaling.LowFreqFactor);
                factors[i] = (float)(1 / ((1 - smooth) / scaling.Factor + smooth));
            }
        }
        return factors;
    }
}
