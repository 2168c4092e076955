"""The machine's fp32 peak, measured by a kernel that nothing can beat: the yardstick of benchmark efficiency.

A GEMM library is no limit (XNNPACK and ONNX Runtime outrun `torch.mm` at 4096 on AVX-512 CPUs).
Peak fp32 is one fused multiply-add per vector lane per FMA port per cycle, so this module compiles a
small C kernel at benchmark time (`cc -O2 -march=native -fopenmp`): each thread runs twelve
independent FMA chains on registers, enough to hide the FMA latency on every x86 and ARM core, with no
memory traffic. It is built for each vector width (128, 256, 512 bits) and the best all-core rate is the
peak. The best GEMM rate is measured too and the peak is never below it; without a C compiler the
peak falls back to that GEMM rate and says so (`method`), because then it is a lower bound.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: Independent accumulators per thread: FMA latency (4-5 cycles) x FMA ports (2) needs at least 10.
CHAINS = 12

_KERNEL = r"""
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
typedef float vec __attribute__((vector_size(WIDTH)));
#define LANES (WIDTH / 4)

int main(int argc, char **argv) {
    long iterations = atol(argv[1]);
    int threads = atoi(argv[2]);
    double checksum = 0.0;
    double started = omp_get_wtime();
    #pragma omp parallel num_threads(threads) reduction(+:checksum)
    {
        vec acc[CHAINS], scale, shift;
        for (int l = 0; l < LANES; l++) { scale[l] = 0.999999f; shift[l] = 1e-7f * (omp_get_thread_num() + 1); }
        for (int c = 0; c < CHAINS; c++) for (int l = 0; l < LANES; l++) acc[c][l] = (float)(c + l);
        for (long i = 0; i < iterations; i++) {
            #pragma GCC unroll 12
            for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * scale + shift;
        }
        for (int c = 0; c < CHAINS; c++) for (int l = 0; l < LANES; l++) checksum += acc[c][l];
    }
    double seconds = omp_get_wtime() - started;
    double flops = 2.0 * LANES * CHAINS * (double)iterations * threads;
    printf("gflops %.3f checksum %.6g\n", flops / seconds / 1e9, checksum);
    return 0;
}
"""


@dataclass(frozen=True)
class Fp32Peak:
    """Measured fp32 rates of this machine (GFLOP/s); `gflops` is the yardstick."""

    gflops: float
    method: str
    threads: int
    fma_gflops: float | None
    fma_single_thread_gflops: float | None
    gemm_gflops: float

    def to_json(self) -> dict:
        return asdict(self)


def measure_fp32_peak(threads: int, seconds: float = 0.4, repeats: int = 3) -> Fp32Peak:
    """Best of the FMA kernels (all vector widths, `threads` threads) and of GEMM sizes; see the module doc."""
    gemm = best_gemm_gflops()
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return Fp32Peak(gemm, "best torch.mm rate (no C compiler: a lower bound of the peak)", threads, None, None, gemm)
    with tempfile.TemporaryDirectory(prefix="edgetam-peak-") as work:
        kernels = [k for k in (_build(compiler, Path(work), width) for width in (16, 32, 64)) if k is not None]
        if not kernels:
            return Fp32Peak(gemm, "best torch.mm rate (FMA kernel did not build: a lower bound)", threads, None, None, gemm)
        all_cores = {k: _rate(k, threads, seconds, repeats) for k in kernels}
        best = max(all_cores, key=all_cores.get)
        single = _rate(best, 1, seconds, repeats)
    width = int(best.name.split("-")[1]) * 8
    peak = max(all_cores[best], gemm)
    method = f"FMA-throughput kernel, {width}-bit vectors, {CHAINS} chains per thread, {threads} threads"
    if gemm > all_cores[best]:
        method = f"best torch.mm rate (above the {method})"
    return Fp32Peak(round(peak, 1), method, threads, round(all_cores[best], 1), round(single, 1), gemm)


def best_gemm_gflops(sizes: tuple[int, ...] = (1024, 2048, 4096), runs: int = 3) -> float:
    """Best fp32 `torch.mm` rate over a few sizes (with torch's current thread count)."""
    import torch

    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        for _ in range(runs):
            started = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return round(best, 1)


def _build(compiler: str, work: Path, width: int) -> Path | None:
    source = work / f"fma-{width}.c"
    binary = work / f"fma-{width}"
    source.write_text(_KERNEL)
    command = [compiler, "-O2", "-march=native", "-fopenmp", f"-DWIDTH={width}", f"-DCHAINS={CHAINS}",
               str(source), "-o", str(binary)]
    built = subprocess.run(command, capture_output=True, text=True)
    return binary if built.returncode == 0 else None


def _rate(binary: Path, threads: int, seconds: float, repeats: int) -> float:
    """Best GFLOP/s of `repeats` runs sized to last about `seconds` each."""
    iterations = 1_000_000
    rate = _run(binary, iterations, threads)
    # at `rate` GFLOP/s one iteration is 2 * lanes * chains * threads flops; size runs to `seconds`
    lanes = int(binary.name.split("-")[1]) // 4
    iterations = max(iterations, int(seconds * rate * 1e9 / (2 * lanes * CHAINS * threads)))
    return max(_run(binary, iterations, threads) for _ in range(repeats))


def _run(binary: Path, iterations: int, threads: int) -> float:
    output = subprocess.run([str(binary), str(iterations), str(threads)], capture_output=True, text=True, check=True)
    match = re.search(r"gflops ([0-9.]+)", output.stdout)
    if match is None:
        raise RuntimeError(f"FMA kernel printed no rate: {output.stdout!r}")
    return float(match.group(1))
