// BenchmarkDotNet micro-benchmarks of the kernels, one thread each, so that a kernel's cost is seen
// apart from threading and from the rest of the forward pass (`specache bench` measures that).
//   dotnet run -c Release --project bench/KernelBench -- --filter '*'                 all of them
//   dotnet run -c Release --project bench/KernelBench -- --filter '*MatMul*' --job short
//   dotnet run -c Release --project bench/KernelBench -- --list flat                  their names
// BenchmarkDotNet's own switches (--job, --filter, --exporters, ...) apply; results land in
// BenchmarkDotNet.Artifacts/. Times on a shared machine are only comparable within one run.
using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(SpeCache.KernelBench.MatMulBenchmarks).Assembly).Run(args);
