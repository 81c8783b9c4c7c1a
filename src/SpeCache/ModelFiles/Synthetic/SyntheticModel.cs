using System.Runtime.InteropServices;
using SpeCache.ModelFiles.Conversion;
using SpeCache.ModelFiles.Gguf;
using SpeCache.Quants;
using SpeCache.Transformer;

namespace SpeCache.ModelFiles.Synthetic;

/// <summary>What a synthetic model is: a shape, a weight type, a seed, and optional size overrides.</summary>
/// <param name="Layers">Layer count instead of the shape's (null: the shape's).</param>
/// <param name="Vocab">Vocabulary size instead of the shape's (null: the shape's).</param>
public sealed record SyntheticModelSpec(SyntheticShape Shape, GgmlType Type, ulong Seed = 0, int? Layers = null, int? Vocab = null)
{
    /// <summary>Bumped whenever the bytes written for the same spec change, so stale cached files are remade.</summary>
    public const int GeneratorVersion = 1;

    /// <summary>Weight types the writer produces (what <see cref="WeightFormats.QuantizeRow"/> encodes).</summary>
    public static IReadOnlyDictionary<string, GgmlType> Types { get; } = new Dictionary<string, GgmlType>(StringComparer.OrdinalIgnoreCase)
    {
        ["f32"] = GgmlType.F32,
        ["f16"] = GgmlType.F16,
        ["bf16"] = GgmlType.BF16,
        ["q8_0"] = GgmlType.Q8_0,
        ["q4_0"] = GgmlType.Q4_0,
        ["q4_k"] = GgmlType.Q4_K,
        ["q6_k"] = GgmlType.Q6_K,
    };

    public static string TypeName(GgmlType type) => Types.First(t => t.Value == type).Key;

    public ModelConfig Config => Shape.Config with
    {
        LayerCount = Layers ?? Shape.Config.LayerCount,
        VocabSize = Vocab ?? Shape.Config.VocabSize,
    };

    /// <summary>The file name: equal names mean equal specs, which is what makes reusing a file safe.</summary>
    public string FileName =>
        $"{Shape.Name}-{TypeName(Type)}-seed{Seed}" + (Layers is { } l ? $"-l{l}" : "") + (Vocab is { } v ? $"-v{v}" : "") + ".gguf";

    /// <summary>Stored in the file's metadata and compared before a cached file is reused.</summary>
    public string Description => $"{FileName} generator v{GeneratorVersion}";

    public void Validate()
    {
        if (!Types.Values.Contains(Type))
            throw new NotSupportedException($"synthetic weights cannot be written as {GgmlTypeInfo.Name(Type)} (supported: {string.Join(", ", Types.Keys)})");
        if (Layers is < 1) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "a model needs at least one layer");
        if (Vocab is { } v && v < SyntheticVocabulary.MinimumSize)
            throw new ArgumentOutOfRangeException(nameof(Vocab), v, $"the vocabulary needs at least {SyntheticVocabulary.MinimumSize} tokens");
        Config.Validate();
    }
}

/// <summary>
/// Writes deterministic random-weight GGUF files with the shapes of real models, for speed and memory
/// measurements where no trained model of that size can be had. Both our loader and llama.cpp load them.
/// </summary>
/// <remarks>
/// Weights are N(0, 0.02²), the initialization scale of the Llama family, so activations stay finite
/// through any depth; norms are 1 and biases N(0, 0.02²). Every row has its own PRNG stream, seeded from
/// (seed, tensor, row), so the bytes do not depend on how many threads generate them.
/// </remarks>
public static class SyntheticModel
{
    public const string SpecKey = "specache.synthetic.spec";
    const float WeightScale = 0.02f;

    /// <summary>The default folder for generated models: $XDG_CACHE_HOME/specache/models, else ~/.cache/specache/models.</summary>
    public static string DefaultFolder()
    {
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(string.IsNullOrEmpty(home) ? Path.GetTempPath() : home, ".cache");
        return Path.Combine(root, "specache", "models");
    }

    /// <summary>
    /// The path of <paramref name="spec"/>'s file in <paramref name="folder"/>, written first unless a file
    /// made from the same spec (by the same generator version) is already there.
    /// </summary>
    /// <param name="created">Whether this call wrote the file.</param>
    public static string Ensure(SyntheticModelSpec spec, string folder, out bool created, IProgress<double>? progress = null, int threads = 0)
    {
        spec.Validate();
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, spec.FileName);
        created = !IsMadeFrom(path, spec);
        if (created) Write(spec, path, progress, threads);
        return path;
    }

    /// <summary>Whether <paramref name="path"/> is a complete file written from <paramref name="spec"/>.</summary>
    public static bool IsMadeFrom(string path, SyntheticModelSpec spec)
    {
        if (!File.Exists(path)) return false;
        try
        {
            using var file = GgufFile.Open(path);
            return file.Metadata.TryGetString(SpecKey, out var stored) && stored == spec.Description;
        }
        catch (InvalidDataException)
        {
            return false; // not a readable GGUF: write it again
        }
    }

    /// <summary>
    /// Writes <paramref name="spec"/> to <paramref name="path"/> under a temporary name that is renamed
    /// into place at the end, so an interrupted run never leaves a partial file at <paramref name="path"/>.
    /// </summary>
    /// <param name="threads">Generating threads; 0 uses every core. The bytes are the same for any count.</param>
    public static void Write(SyntheticModelSpec spec, string path, IProgress<double>? progress = null, int threads = 0)
    {
        spec.Validate();
        var config = spec.Config;
        string arch = GgufConverter.TargetArchitecture(config.Architecture);

        var plan = new List<(string Name, GgmlType Type, long[] Shape, TensorKind Kind)>();
        foreach (var (name, shape) in LlamaTensorLayout.Required(config))
        {
            var kind = shape.Length > 1 ? TensorKind.Matrix : name.EndsWith(".bias", StringComparison.Ordinal) ? TensorKind.Bias : TensorKind.Norm;
            plan.Add((name, kind == TensorKind.Matrix ? MatrixType(spec.Type, shape[0]) : GgmlType.F32, shape, kind));
        }
        if (config.RopeScaling is { } scaling)
            plan.Add((LlamaTensorLayout.RopeFreqs, GgmlType.F32, [config.RopeDim / 2], TensorKind.RopeFactors));

        using var writer = new GgufWriter(path);
        writer.SetMetadata("general.architecture", arch);
        writer.SetMetadata("general.name", $"synthetic {spec.Shape.Name}");
        GgufConverter.WriteShapeMetadata(writer, config, arch, spec.Type);
        foreach (var (key, value) in SyntheticVocabulary.Create(config.VocabSize).ToGgufMetadata())
            writer.SetMetadata(key, value);
        writer.SetMetadata(SpecKey, spec.Description);
        foreach (var t in plan) writer.AddTensor(t.Name, t.Type, t.Shape);

        double totalRows = plan.Sum(t => (double)RowCount(t.Shape)), doneRows = 0;
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = threads > 0 ? threads : Environment.ProcessorCount };
        for (int index = 0; index < plan.Count; index++)
        {
            var (_, type, shape, kind) = plan[index];
            switch (kind)
            {
                case TensorKind.Norm:
                    var ones = new float[shape[0]];
                    Array.Fill(ones, 1f);
                    writer.WriteTensorData(MemoryMarshal.AsBytes(ones.AsSpan()));
                    break;
                case TensorKind.Bias:
                    var bias = new float[shape[0]];
                    FillRow(spec.Seed, index, 0, bias);
                    writer.WriteTensorData(MemoryMarshal.AsBytes(bias.AsSpan()));
                    break;
                case TensorKind.RopeFactors:
                    writer.WriteTensorData(MemoryMarshal.AsBytes(GgufConverter.Llama3RopeFactors(config, config.RopeScaling!).AsSpan()));
                    break;
                default:
                    WriteMatrix(writer, spec.Seed, index, type, (int)shape[0], shape[1], parallel, rows =>
                    {
                        doneRows += rows;
                        progress?.Report(doneRows / totalRows);
                    });
                    continue;
            }
            doneRows += RowCount(shape);
            progress?.Report(doneRows / totalRows);
        }
        writer.Finish();
    }

    enum TensorKind { Matrix, Norm, Bias, RopeFactors }

    /// <summary>The type of a matrix: the requested one, unless its rows are not whole blocks of it.</summary>
    /// <remarks>
    /// Qwen2.5-0.5B's rows of 896 are not whole Q4_K/Q6_K super-blocks of 256; like llama.cpp's
    /// quantizer, fall back to a 32-wide type of about the same size (Q4_0 for Q4_K, Q8_0 for Q6_K).
    /// </remarks>
    static GgmlType MatrixType(GgmlType requested, long rowLength)
    {
        if (rowLength % GgmlTypeInfo.Geometry(requested).BlockSize == 0) return requested;
        var fallback = requested == GgmlType.Q4_K ? GgmlType.Q4_0 : GgmlType.Q8_0;
        return rowLength % GgmlTypeInfo.Geometry(fallback).BlockSize == 0 ? fallback : GgmlType.F16;
    }

    // Rows are generated and encoded in parallel a chunk at a time, then written in order.
    static void WriteMatrix(GgufWriter writer, ulong seed, int tensor, GgmlType type, int cols, long rows, ParallelOptions parallel, Action<long> done)
    {
        int rowBytes = checked((int)GgmlTypeInfo.RowBytes(type, cols));
        int chunkRows = (int)Math.Clamp((8 << 20) / rowBytes, 1, rows);
        var chunk = new byte[chunkRows * rowBytes];
        for (long first = 0; first < rows; first += chunkRows)
        {
            int count = (int)Math.Min(chunkRows, rows - first);
            Parallel.For(0, count, parallel, () => new float[cols], (i, _, values) =>
            {
                FillRow(seed, tensor, first + i, values);
                WeightFormats.QuantizeRow(type, values, chunk.AsSpan(i * rowBytes, rowBytes));
                return values;
            }, _ => { });
            writer.WriteTensorData(chunk.AsSpan(0, count * rowBytes));
            done(count);
        }
    }

    /// <summary>Row <paramref name="row"/> of tensor <paramref name="tensor"/>: N(0, 0.02²) from its own PRNG stream.</summary>
    static void FillRow(ulong seed, int tensor, long row, Span<float> values)
    {
        var random = new Xoshiro256(SplitMix(SplitMix(seed ^ 0x5EED_5EC5) ^ ((ulong)tensor << 40) ^ (ulong)row));
        // Box-Muller: two independent normals per pair of uniforms.
        for (int i = 0; i < values.Length; i += 2)
        {
            float u1 = 1f - random.NextSingle(); // in (0, 1]: the log stays finite
            float u2 = random.NextSingle();
            float radius = MathF.Sqrt(-2f * MathF.Log(u1)) * WeightScale;
            var (sin, cos) = MathF.SinCos(2f * MathF.PI * u2);
            values[i] = radius * cos;
            if (i + 1 < values.Length) values[i + 1] = radius * sin;
        }
    }

    static ulong SplitMix(ulong x)
    {
        x += 0x9E3779B97F4A7C15;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB;
        return x ^ (x >> 31);
    }

    static long RowCount(long[] shape) => shape.Length > 1 ? shape[1] : 1;

    /// <summary>xoshiro256** (Blackman and Vigna): fast, and its output is fixed by definition, unlike System.Random's.</summary>
    struct Xoshiro256
    {
        ulong _s0, _s1, _s2, _s3;

        public Xoshiro256(ulong seed)
        {
            _s0 = SplitMix(seed);
            _s1 = SplitMix(_s0);
            _s2 = SplitMix(_s1);
            _s3 = SplitMix(_s2);
        }

        public ulong Next()
        {
            ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
            ulong t = _s1 << 17;
            _s2 ^= _s0;
            _s3 ^= _s1;
            _s1 ^= _s2;
            _s0 ^= _s3;
            _s2 ^= t;
            _s3 = ulong.RotateLeft(_s3, 45);
            return result;
        }

        /// <summary>Uniform in [0, 1) with 24 bits, every value exactly representable.</summary>
        public float NextSingle() => (Next() >> 40) * (1f / (1 << 24));
    }
}
