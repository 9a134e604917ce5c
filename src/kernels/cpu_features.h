// Which SIMD code path the quantised kernels run. Chosen once at run time from the CPU
// (__builtin_cpu_supports), so one binary runs on any x86-64; WHALE_KERNEL_PATH=scalar|avx2|
// avx512|vnni caps it (for tests and comparisons); asking for more than the CPU has is an error.
#pragma once
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
void reexec_with_openblas_coretype(char** argv);

}  // namespace whale
