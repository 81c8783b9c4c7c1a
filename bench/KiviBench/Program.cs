// Measures KIVI's fused key-score kernel against 16-bit keys, one KV head with 4 query heads (GQA),
// headDim 128 (or as given), 32K tokens: time per pass over all tokens, bytes read per token, and GB/s.
// "hot": one head's cache read again and again (it sits in L2/L3). "cold": a pass over each of
// enough heads to fill ~256 MB, the way a decode step walks every layer's cache (DRAM-bound).
// Run: dotnet run -c Release --project bench/KiviBench [tokens] [seconds per case] [head size]
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using SpeCache.KvCache;
using SpeCache.KvCache.Quantization;

int tokens = args.Length > 0 ? int.Parse(args[0]) : 32 * 1024;
double seconds = args.Length > 1 ? double.Parse(args[1]) : 1.0;
int headDim = args.Length > 2 ? int.Parse(args[2]) : 128;
const int queryHeads = 4;
const long coldBytes = 256L << 20;

var rng = new Random(42);
var queries = new float[queryHeads * headDim];
for (int i = 0; i < queries.Length; i++) queries[i] = (float)(rng.NextDouble() * 2 - 1);
var keys = new float[tokens * headDim];
for (int i = 0; i < keys.Length; i++) keys[i] = (float)(rng.NextDouble() * 2 - 1) * (i % headDim < 4 ? 20 : 1);
var scores = new float[queryHeads * tokens];

// The roofline: one core summing a 256 MB array (cold, DRAM) and a 1 MB one (hot, cache).
{
    var big = new float[coldBytes / sizeof(float)];
    Array.Fill(big, 1f);
    var small = new float[(1 << 20) / sizeof(float)];
    double cold = Best(_ => TensorPrimitives.Sum(big), _ => 0), hot = Best(_ => TensorPrimitives.Sum(small), _ => 0);
    Console.WriteLine($"read bandwidth, one core: {coldBytes / cold / 1e9:F1} GB/s from DRAM (256 MB), {(1 << 20) / hot / 1e9:F1} GB/s from cache (1 MB)");
}
// Every vector kernel this CPU runs (the scalar references take seconds per pass at 32K tokens).
var kernels = new[] { KiviKernel.Vector512, KiviKernel.Vector256, KiviKernel.Vector128 }.Where(k => KiviAttention.Runs(k, new KiviFormat(headDim, 32, 1))).ToArray();
Console.WriteLine($"KeyScores, headDim {headDim}, {tokens} tokens, {queryHeads} query heads per KV head, kernels: {string.Join(", ", kernels)}");
Console.WriteLine($"{"format",-16} {"B/token",8} {"vs F16",7} {"hot us",9} {"hot GB/s",9} {"cold us",9} {"cold GB/s",10} {"ns/token",9}");

// F16 baseline: what FullKvCache streams, 2*headDim bytes per token; converted a row at a time and dotted.
{
    long headBytes = (long)tokens * headDim * 2;
    int copies = (int)Math.Max(1, coldBytes / headBytes);
    var heads = new Half[copies][];
    for (int h = 0; h < copies; h++)
    {
        heads[h] = new Half[tokens * headDim];
        TensorPrimitives.ConvertToHalf(keys, heads[h]);
    }
    // As FullKvCache does it: Half -> float in blocks (one library call per 64 tokens, so its
    // overhead is amortized), then a dot per token and query head.
    const int block = 64;
    var rows = new float[block * headDim];
    void Pass(Half[] k)
    {
        for (int t0 = 0; t0 < tokens; t0 += block)
        {
            TensorPrimitives.ConvertToSingle(k.AsSpan(t0 * headDim, block * headDim), rows);
            for (int t = 0; t < block; t++)
                for (int q = 0; q < queryHeads; q++)
                    scores[q * tokens + t0 + t] = AttentionMath.Dot(rows.AsSpan(t * headDim, headDim), queries.AsSpan(q * headDim, headDim));
        }
    }
    Report("F16 (baseline)", 2 * headDim, headBytes, h => Pass(heads[h % copies]), copies);
}

foreach (int bits in new[] { 1, 2, 4 })
    foreach (int group in new[] { 32, 64 })
    {
        var format = new KiviFormat(headDim, group, bits);
        int groups = tokens / group;
        long headBytes = (long)groups * format.KeyGroupBytes;
        int copies = (int)Math.Max(1, coldBytes / headBytes);
        var packed = new byte[headBytes];
        for (int g = 0; g < groups; g++)
            KiviQuantizer.QuantizeKeyGroup(format, keys.AsSpan(g * group * headDim), headDim, packed.AsSpan(g * format.KeyGroupBytes, format.KeyGroupBytes));
        var heads = new byte[copies][];
        for (int h = 0; h < copies; h++) heads[h] = (byte[])packed.Clone();
        var groupScores = new float[queryHeads * group];
        foreach (var kernel in kernels)
        {
            void Pass(byte[] head)
            {
                for (int g = 0; g < groups; g++)
                    KiviAttention.KeyScores(format, queries, head.AsSpan(g * format.KeyGroupBytes, format.KeyGroupBytes), groupScores, group, kernel);
            }
            Report($"{bits}b G={group} {Width(kernel)}", (double)format.KeyGroupBytes / group, headBytes, h => Pass(heads[h % copies]), copies);
        }
    }

// AccumulateValues over the same 32K tokens, 4 query heads sharing the KV head (probabilities from a softmax).
Console.WriteLine();
Console.WriteLine($"AccumulateValues, headDim {headDim}, {tokens} tokens, {queryHeads} query heads per KV head");
Console.WriteLine($"{"format",-16} {"B/token",8} {"vs F16",7} {"hot us",9} {"hot GB/s",9} {"cold us",9} {"cold GB/s",10} {"ns/token",9}");
var probabilities = new float[queryHeads * tokens];
for (int i = 0; i < probabilities.Length; i++) probabilities[i] = (float)rng.NextDouble();
for (int q = 0; q < queryHeads; q++) TensorPrimitives.SoftMax(probabilities.AsSpan(q * tokens, tokens), probabilities.AsSpan(q * tokens, tokens));
var output = new float[queryHeads * headDim];
foreach (int bits in new[] { 1, 2, 4 })
    foreach (int group in new[] { 32, 64 })
    {
        var format = new KiviFormat(headDim, group, bits);
        long headBytes = format.ValueBytes(tokens);
        int copies = (int)Math.Max(1, coldBytes / headBytes);
        var packed = new byte[headBytes];
        for (int t = 0; t < tokens; t++)
            KiviQuantizer.QuantizeValueToken(format, keys.AsSpan(t * headDim, headDim), packed, t);
        var heads = new byte[copies][];
        for (int h = 0; h < copies; h++) heads[h] = (byte[])packed.Clone();
        foreach (var kernel in kernels)
            Report($"{bits}b G={group} {Width(kernel)}", format.ValueTokenBytes, headBytes,
                h => KiviAttention.AccumulateValues(format, probabilities, tokens, tokens, heads[h % copies], output, kernel), copies);
    }

static string Width(KiviKernel kernel) => kernel switch { KiviKernel.Vector512 => "512", KiviKernel.Vector256 => "256", _ => "128" };

void Report(string name, double bytesPerToken, long headBytes, Action<int> pass, int copies)
{
    double hot = Best(pass, _ => 0), cold = Best(pass, i => i);
    Console.WriteLine($"{name,-16} {bytesPerToken,8:F1} {2 * headDim / bytesPerToken,6:F1}x {hot * 1e6,9:F1} {headBytes / hot / 1e9,9:F2} {cold * 1e6,9:F1} {headBytes / cold / 1e9,10:F2} {cold * 1e9 / tokens,9:F2}");
    _ = copies;
}

// Fastest pass of several timed windows (the machine is shared; the minimum is the least disturbed).
double Best(Action<int> pass, Func<int, int> headOf)
{
    for (int i = 0; i < 3; i++) pass(headOf(i)); // warm up, tier up the JIT
    double best = double.MaxValue;
    var total = Stopwatch.StartNew();
    int n = 0;
    while (total.Elapsed.TotalSeconds < seconds || n < 5)
    {
        long start = Stopwatch.GetTimestamp();
        pass(headOf(n++));
        best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
    }
    return best;
}
