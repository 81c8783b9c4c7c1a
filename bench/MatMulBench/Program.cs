using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using SpeCache.Quants;
using SpeCache.Tensors;

// MatMul n=1 over 4096x4096 weights, in GB/s of weight bytes read, next to this machine's
// memory bandwidth measured the same way (read: vector sum; copy: counted as read + write).
// "hot" reuses one matrix (which may sit in L3), "cold" cycles through enough copies to exceed
// any L3, as a model's layers do. Arguments: [seconds per figure] [types, e.g. Q8_0,Q4_K] [nomem|mem]
// [rows x cols, e.g. 8192x2048: another shape than 4096x4096].
// With "gemm" first: matrix-matrix throughput instead, GOPS (2 x multiply-adds) of one
// 8192x2048 weight (Llama-3.2-1B's FFN up; another shape as rows x cols after the types)
// against n activation rows, n from 1 to 512.
// With "rowdot" first: the tiled matmul against the per-row dots (the path other formats take)
// on one thread, interleaved in the same process and timed in the thread's CPU time (not wall
// time), so that other work on a shared machine hits both alike and mostly drops out:
// rowdot [seconds] [types] [n list, e.g. 1,2,4,64].
const int Dim = 4096;
if (args.Length > 0 && args[0] == "rowdot")
{
    RowDot(args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1.0,
        args.Length > 2 ? args[2].Split(',').Select(Enum.Parse<GgmlType>).ToArray() : [GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q4_0],
        args.Length > 3 ? args[3].Split(',').Select(int.Parse).ToArray() : [1, 2, 4, 64]);
    return;
}
if (args.Length > 0 && args[0] == "gemm")
{
    // Optional shape after the types: rows x cols, e.g. 2048x8192 (Llama-3.2-1B's FFN down).
    var shape = args.Length > 3 ? args[3].Split('x').Select(int.Parse).ToArray() : [8192, 2048];
    Gemm(args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1.0,
        args.Length > 2 ? args[2].Split(',').Select(Enum.Parse<GgmlType>).ToArray() : [GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q4_0], shape[0], shape[1]);
    return;
}
double seconds = args.Length > 0 ? double.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 1.0;
var types = args.Length > 1 ? args[1].Split(',').Select(Enum.Parse<GgmlType>).ToArray() : [GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.F16];
bool memory = args.Length <= 2 || args[2] != "nomem";
var decodeShape = args.Length > 3 ? args[3].Split('x').Select(int.Parse).ToArray() : [Dim, Dim];
int outRows = decodeShape[0], inCols = decodeShape[1];

unsafe
{
    Console.WriteLine($"{Environment.ProcessorCount} processors, Vector512 {Vector512.IsHardwareAccelerated}, AvxVnni {System.Runtime.Intrinsics.X86.AvxVnni.IsSupported}, load average {LoadAverage()}");

    const long streamBytes = 512L << 20;
    byte* a = (byte*)NativeMemory.AlignedAlloc((nuint)streamBytes, 64);
    byte* b = (byte*)NativeMemory.AlignedAlloc((nuint)streamBytes, 64);
    new Span<byte>(a, (int)streamBytes).Fill(1);
    new Span<byte>(b, (int)streamBytes).Fill(1);
    foreach (int threads in memory ? [1, 2] : Array.Empty<int>())
    {
        using var pool = new WorkerPool(threads);
        var read = new ReadJob { Data = a, Bytes = streamBytes };
        var copy = new CopyJob { From = a, To = b, Bytes = streamBytes };
        const int chunks = 64;
        double readGbs = Measure(() => pool.Run(read, chunks), streamBytes, seconds);
        double copyGbs = Measure(() => pool.Run(copy, chunks), 2 * streamBytes, seconds);
        Console.WriteLine($"memory  threads {threads}: read {readGbs,6:F1} GB/s   copy {copyGbs,6:F1} GB/s (read+write)");
    }
    NativeMemory.AlignedFree(a);
    NativeMemory.AlignedFree(b);

    var x = new float[inCols];
    var rng = new Random(1);
    for (int i = 0; i < inCols; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
    var y = new float[outRows];
    foreach (var type in types)
    {
        long rowBytes = GgmlTypeInfo.RowBytes(type, inCols);
        long bytes = rowBytes * outRows;
        // 256 MB of copies defeats any last-level cache.
        int copies = (int)Math.Max(2, (256L << 20) / bytes);
        var tensors = new WeightTensor[copies];
        byte* first = null;
        var row = new float[inCols];
        for (int c = 0; c < copies; c++)
        {
            byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            if (c == 0)
            {
                for (int r = 0; r < outRows; r++)
                {
                    for (int i = 0; i < inCols; i++) row[i] = (float)(rng.NextDouble() * 2 - 1) * 0.05f;
                    WeightFormats.QuantizeRow(type, row, new Span<byte>(data + r * rowBytes, (int)rowBytes));
                }
                first = data;
            }
            else
            {
                Buffer.MemoryCopy(first, data, bytes, bytes);
            }
            tensors[c] = new WeightTensor($"w{c}", type, [inCols, outRows], data, bytes);
        }
        foreach (int threads in new[] { 1, 2 })
        {
            using var backend = new CpuBackend(threads);
            double hot = Measure(() => backend.MatMul(tensors[0], x, y, 1), bytes, seconds);
            int next = 0;
            double cold = Measure(() => backend.MatMul(tensors[next++ % copies], x, y, 1), bytes, seconds);
            double us = bytes / (cold * 1e3);
            // The speculative two-row decode: both rows per weight read; GB/s of weight bytes, as above.
            var x2 = new float[2 * inCols];
            x.CopyTo(x2, 0);
            x.CopyTo(x2, inCols);
            var y2 = new float[2 * outRows];
            double two = Measure(() => backend.MatMul(tensors[next++ % copies], x2, y2, 2), bytes, seconds);
            Console.WriteLine($"matmul {type,-5} threads {threads}: hot {hot,6:F1} GB/s   cold {cold,6:F1} GB/s ({us:F0} µs per {outRows}x{inCols}, {bytes / 1e6:F1} MB)   n=2 cold {two,6:F1} GB/s   load {LoadAverage()}");
        }
        foreach (var t in tensors) NativeMemory.AlignedFree(t.Data);
    }
}

static unsafe void Gemm(double seconds, GgmlType[] types, int rows, int cols)
{
    const int maxN = 512;
    Console.WriteLine($"{Environment.ProcessorCount} processors, AvxVnni {System.Runtime.Intrinsics.X86.AvxVnni.IsSupported}, load average {LoadAverage()}");
    var rng = new Random(2);
    var x = new float[maxN * cols];
    for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
    var y = new float[maxN * rows];
    var row = new float[cols];
    foreach (var type in types)
    {
        long rowBytes = GgmlTypeInfo.RowBytes(type, cols);
        byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)(rowBytes * rows), 64);
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < cols; i++) row[i] = (float)(rng.NextDouble() * 2 - 1) * 0.05f;
            WeightFormats.QuantizeRow(type, row, new Span<byte>(data + r * rowBytes, (int)rowBytes));
        }
        var w = new WeightTensor("w", type, [cols, rows], data, rowBytes * rows);
        foreach (int threads in new[] { 1, 2 })
        {
            using var backend = new CpuBackend(threads);
            var line = new System.Text.StringBuilder($"gemm {type,-5} {rows}x{cols} threads {threads}:");
            foreach (int n in new[] { 1, 2, 4, 8, 16, 64, 512 })
            {
                // Measure counts "bytes" per run; pass operations and read GOPS.
                double gops = Measure(() => backend.MatMul(w, x.AsSpan(0, n * cols), y, n), 2L * rows * cols * n, seconds);
                line.Append($"  n={n} {gops,6:F1}");
            }
            Console.WriteLine($"{line} GOPS   load {LoadAverage()}");
        }
        NativeMemory.AlignedFree(data);
    }
}

static unsafe void RowDot(double seconds, GgmlType[] types, int[] ns)
{
    const int rows = 8192, cols = 2048, rounds = 5;
    int maxN = ns.Max();
    Console.WriteLine($"{Environment.ProcessorCount} processors, AvxVnni {System.Runtime.Intrinsics.X86.AvxVnni.IsSupported}, load average {LoadAverage()}");
    var rng = new Random(2);
    var x = new float[maxN * cols];
    for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
    var y = new float[maxN * rows];
    var row = new float[cols];
    using var backend = new CpuBackend(1);
    foreach (var type in types)
    {
        var traits = TypeTraits.Of(type);
        long rowBytes = GgmlTypeInfo.RowBytes(type, cols);
        byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)(rowBytes * rows), 64);
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < cols; i++) row[i] = (float)(rng.NextDouble() * 2 - 1) * 0.05f;
            WeightFormats.QuantizeRow(type, row, new Span<byte>(data + r * rowBytes, (int)rowBytes));
        }
        var w = new WeightTensor("w", type, [cols, rows], data, rowBytes * rows);
        int actBytes = (int)GgmlTypeInfo.RowBytes(traits.ActivationType, cols);
        var act = new byte[maxN * actBytes];
        // The row-dot matmul as MatMulJob runs it on one thread: quantize, then per weight row the dots (pairs through Dot2).
        void Rows(int n)
        {
            for (int i = 0; i < n; i++) traits.QuantizeActivation(x.AsSpan(i * cols, cols), act.AsSpan(i * actBytes, actBytes));
            for (int r = 0; r < rows; r++)
            {
                var wr = w.Row(r);
                int i = 0;
                if (traits.Dot2 is { } dot2)
                    for (; i + 1 < n; i += 2)
                    {
                        dot2(wr, act.AsSpan(i * actBytes, actBytes), act.AsSpan((i + 1) * actBytes, actBytes), cols, out float y0, out float y1);
                        y[i * rows + r] = y0;
                        y[(i + 1) * rows + r] = y1;
                    }
                for (; i < n; i++) y[i * rows + r] = traits.Dot(wr, act.AsSpan(i * actBytes, actBytes), cols);
            }
        }
        foreach (int n in ns)
        {
            double tiled = 0, dots = 0;
            // Alternate short windows of each so that load changes hit both; keep each one's best.
            for (int round = 0; round < rounds; round++)
            {
                tiled = Math.Max(tiled, MeasureCpu(() => backend.MatMul(w, x.AsSpan(0, n * cols), y, n), 2L * rows * cols * n, seconds / rounds));
                dots = Math.Max(dots, MeasureCpu(() => Rows(n), 2L * rows * cols * n, seconds / rounds));
            }
            Console.WriteLine($"rowdot {type,-5} n={n,-3} tiled {tiled,6:F1}  row dots {dots,6:F1} GOPS per CPU second  ratio {tiled / dots:F2}   load {LoadAverage()}");
        }
        NativeMemory.AlignedFree(data);
    }
}

// Other work on the machine steals cores; the figures are only meaningful next to this.
static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";

static double Measure(Action run, long bytesPerRun, double seconds)
{
    for (int i = 0; i < 3; i++) run(); // warm up (JIT tiers, page faults)
    double best = 0;
    // Best of several timed windows: the machine is shared, so the best window is the least disturbed.
    for (int window = 0; window < 5; window++)
    {
        var sw = Stopwatch.StartNew();
        long runs = 0;
        while (sw.Elapsed.TotalSeconds < seconds / 5)
        {
            run();
            runs++;
        }
        best = Math.Max(best, runs * (double)bytesPerRun / sw.Elapsed.TotalSeconds / 1e9);
    }
    return best;
}

// As Measure, in this thread's CPU time: time spent preempted by other processes does not count.
static double MeasureCpu(Action run, long bytesPerRun, double seconds)
{
    for (int i = 0; i < 3; i++) run();
    double best = 0;
    for (int window = 0; window < 5; window++)
    {
        double start = ThreadCpu.Seconds();
        long runs = 0;
        double elapsed;
        do
        {
            run();
            runs++;
            elapsed = ThreadCpu.Seconds() - start;
        }
        while (elapsed < seconds / 5);
        best = Math.Max(best, runs * (double)bytesPerRun / elapsed / 1e9);
    }
    return best;
}

static class ThreadCpu
{
    [StructLayout(LayoutKind.Sequential)]
    struct Timespec
    {
        public long Seconds, Nanoseconds;
    }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    static extern int ClockGetTime(int clock, out Timespec time);

    const int ThreadCpuTimeClock = 3; // CLOCK_THREAD_CPUTIME_ID

    public static double Seconds()
    {
        if (ClockGetTime(ThreadCpuTimeClock, out var t) != 0) throw new InvalidOperationException("clock_gettime failed");
        return t.Seconds + t.Nanoseconds * 1e-9;
    }
}

unsafe sealed class ReadJob : IRangeJob
{
    public byte* Data;
    public long Bytes;
    public float Sink;

    public void Execute(int start, int end)
    {
        long per = Bytes / 64;
        var acc0 = Vector512<float>.Zero;
        var acc1 = Vector512<float>.Zero;
        for (long p = start * per; p < end * per; p += 128)
        {
            acc0 += Vector512.Load((float*)(Data + p));
            acc1 += Vector512.Load((float*)(Data + p + 64));
        }
        Sink += Vector512.Sum(acc0 + acc1);
    }
}

unsafe sealed class CopyJob : IRangeJob
{
    public byte* From, To;
    public long Bytes;

    public void Execute(int start, int end)
    {
        long per = Bytes / 64;
        Buffer.MemoryCopy(From + start * per, To + start * per, (end - start) * per, (end - start) * per);
    }
}
