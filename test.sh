#!/usr/bin/env bash
# Runs the whole test suite the way CI does: installs the llama.cpp peer (tests compare against it)
# and Debian's Chromium (the web chat page tests drive it), builds in Release, runs every test, and
# ends with one line "N passed, N failed[, N skipped]".
set -uo pipefail
cd "$(dirname "$0")"
bash peer/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
# Without a browser only the page tests fail (saying so); the rest of the suite still runs.
bash tests/setup-browser.sh
log=$(mktemp)
dotnet test SpeCache.slnx -c Release 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The kernels again with AVX-512 hidden from .NET: on a CPU that has it, the suite above runs the
# 512-bit paths, and this pass the AVX2 ones (the widest most desktop CPUs take), so both are tested.
if [ "$status" -eq 0 ]; then
  echo "Weight and KV cache kernels and the backend's matmuls again without AVX-512 (DOTNET_EnableAVX512=0):"
  DOTNET_EnableAVX512=0 dotnet test tests/SpeCache.Tests -c Release --no-build \
    --filter "FullyQualifiedName~SpeCache.Tests.Quants|FullyQualifiedName~SpeCache.Tests.KvCache|FullyQualifiedName~SpeCache.Tests.Tensors.CpuBackendTests" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
# The low-bit attention kernels once more with AVX-512 but without its VBMI extension (as on the
# first AVX-512 CPUs): where the CPU has it, the passes above take the VBMI forms.
if [ "$status" -eq 0 ]; then
  echo "KV cache quantization kernels again without AVX-512 VBMI (DOTNET_EnableAVX512v2=0):"
  DOTNET_EnableAVX512v2=0 dotnet test tests/SpeCache.Tests -c Release --no-build \
    --filter "FullyQualifiedName~SpeCache.Tests.KvCache.Quantization" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
# VSTest prints one summary line per test assembly: "Failed!  - Failed: 1, Passed: 10, Skipped: 0, Total: 11".
read -r passed failed skipped < <(grep -Eo 'Failed: +[0-9]+, Passed: +[0-9]+, Skipped: +[0-9]+' "$log" \
  | awk -F'[:,]' '{f+=$2; p+=$4; s+=$6} END {print p+0, f+0, s+0}')
rm -f "$log"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # a build or runner failure counts as a failure
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
