// Which SIMD code path the quantised kernels run. Chosen once at run time from the CPU
// (__builtin_cpu_supports), so one binary runs on any x86-64; WHALE_KERNEL_PATH=scalar|avx2|
// avx512|vnni caps it (for tests and comparisons); asking for more than the CPU has is an error.
#pragma once
#include <cstdint>
#include <string>

namespace whale {

enum class KernelPath {
  Scalar,      // portable C++
  Avx2,        // AVX2 + FMA (ggml's maddubs sign trick)
  Avx512,      // AVX-512 F/BW/VL: two blocks per register
  Avx512Vnni,  // AVX-512 VNNI: vpdpbusd does the u8 x s8 dot in one instruction
};

const char* kernel_path_name(KernelPath p);
KernelPath kernel_path_from_name(const std::string& name);  // throws whale::Error naming the value
bool cpu_supports(KernelPath p);
KernelPath best_kernel_path();  // the fastest path this CPU supports

// The path the kernels use now: the best one, or WHALE_KERNEL_PATH if set, or the last
// set_kernel_path. set_kernel_path throws whale::Error when the CPU lacks the path.
KernelPath kernel_path();
void set_kernel_path(KernelPath p);

// Debian's OpenBLAS 0.3.21 does not know newer AVX-512 CPUs (e.g. family 6 model 207) and falls
// back to its Prescott (SSE3) kernels: SGEMM 3-4x below what the CPU does with its SkylakeX
// kernels. It reads OPENBLAS_CORETYPE once, when the library loads (before main), so the fix is
// to set it and restart the process. set_openblas_coretype_env() sets OPENBLAS_CORETYPE=SkylakeX
// when the CPU has AVX-512 (cpu_supports(KernelPath::Avx512)), the variable is unset and
// WHALE_NO_REEXEC is not set; it returns whether it did (the caller must then re-exec).
// reexec_with_openblas_coretype does both: execv("/proc/self/exe", argv) once (the variable is
// set in the new process, so it does not loop); on failure it returns and the process carries on.
bool set_openblas_coretype_env();

// How OpenMP's idle workers wait between parallel regions (libgomp reads it when it loads, too).
// A decode step is ~160 short regions (6 a layer). With workers that sleep at once
// (OMP_WAIT_POLICY=passive), each region waits for the kernel to wake a sleeping vCPU. With
// workers that spin forever (active), decode ran up to 100x slower when another process shared
// a core. Between the two, workers spin for ~kOmpSpinMicroseconds and then sleep.
// - V2-Lite-shaped Q8_0 decode, 2 cores, AMD Zen 5 VM, alternating processes: 0.94-0.975 of
//   passive's step time, the same as active.
// - With a busy loop on one core: 1.0-1.15x passive's time (a 380 us spin: 1.2-1.7x).
// set_omp_spin_env sets GOMP_SPINCOUNT to the count that takes that long on this CPU
// (omp_spin_count_for times its PAUSE), unless OMP_WAIT_POLICY, GOMP_SPINCOUNT or
// WHALE_NO_REEXEC is set; it returns whether it did (the caller must then re-exec).
// reexec_with_startup_env does both settings and one execv when either changed.
constexpr double kOmpSpinMicroseconds = 100.0;
int64_t omp_spin_count_for(double microseconds);
bool set_omp_spin_env();
void reexec_with_startup_env(char** argv);

}  // namespace whale
