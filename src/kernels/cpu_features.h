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

}  // namespace whale
