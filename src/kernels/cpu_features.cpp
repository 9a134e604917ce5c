#include "kernels/cpu_features.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "core/error.h"

namespace whale {

const char* kernel_path_name(KernelPath p) {
  switch (p) {
    case KernelPath::Scalar: return "scalar";
    case KernelPath::Avx2: return "avx2";
    case KernelPath::Avx512: return "avx512";
    case KernelPath::Avx512Vnni: return "vnni";
  }
  return "?";
}

KernelPath kernel_path_from_name(const std::string& name) {
  for (KernelPath p : {KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512, KernelPath::Avx512Vnni})
    if (name == kernel_path_name(p)) return p;
  throw Error("WHALE_KERNEL_PATH", "is '" + name + "'; expected scalar, avx2, avx512 or vnni");
}

bool cpu_supports(KernelPath p) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl");
  switch (p) {
    case KernelPath::Scalar: return true;
    case KernelPath::Avx2: return avx2;
    case KernelPath::Avx512: return avx512;
    case KernelPath::Avx512Vnni: return avx512 && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return p == KernelPath::Scalar;
#endif
}

KernelPath best_kernel_path() {
  for (KernelPath p : {KernelPath::Avx512Vnni, KernelPath::Avx512, KernelPath::Avx2})
    if (cpu_supports(p)) return p;
  return KernelPath::Scalar;
}

namespace {
// The one process-wide setting (like the thread pool): read on every kernel call, written by
// tests and at start-up.
std::atomic<int> g_path{-1};
}  // namespace

KernelPath kernel_path() {
  int p = g_path.load(std::memory_order_relaxed);
  if (p >= 0) return KernelPath(p);
  KernelPath chosen = best_kernel_path();
  if (const char* env = std::getenv("WHALE_KERNEL_PATH"); env && *env) {
    chosen = kernel_path_from_name(env);
    if (!cpu_supports(chosen))
      throw Error("WHALE_KERNEL_PATH", std::string("is '") + env + "' but this CPU does not support it");
  }
  g_path.store(int(chosen), std::memory_order_relaxed);
  return chosen;
}

void set_kernel_path(KernelPath p) {
  if (!cpu_supports(p))
    throw Error("kernel path", std::string(kernel_path_name(p)) + " is not supported by this CPU");
  g_path.store(int(p), std::memory_order_relaxed);
}

bool set_openblas_coretype_env() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || std::getenv("WHALE_NO_REEXEC") != nullptr) return false;
  if (!cpu_supports(KernelPath::Avx512)) return false;
  return ::setenv("OPENBLAS_CORETYPE", "SkylakeX", 1) == 0;
}

int64_t omp_spin_count_for(double microseconds) {
#if defined(__x86_64__) || defined(__i386__)
  // libgomp's wait loop is one load and one PAUSE per count: time 4000 PAUSEs, best of 3.
  constexpr int kPauses = 4000;
  double best = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kPauses; ++i) _mm_pause();
    best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  const double per_pause = std::max(best / kPauses, 1e-3);  // microseconds
  return std::clamp<int64_t>(int64_t(microseconds / per_pause), 100, 1000000);
#else
  return std::clamp<int64_t>(int64_t(microseconds * 20), 100, 1000000);  // ~50 ns a spin
#endif
}

bool set_omp_spin_env() {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr ||
      std::getenv("WHALE_NO_REEXEC") != nullptr)
    return false;
  return ::setenv("GOMP_SPINCOUNT", std::to_string(omp_spin_count_for(kOmpSpinMicroseconds)).c_str(), 1) == 0;
}

void reexec_with_startup_env(char** argv) {
  const bool coretype = set_openblas_coretype_env();
  const bool spin = set_omp_spin_env();
  if (coretype || spin) ::execv("/proc/self/exe", argv);  // returns only on failure
}

}  // namespace whale
