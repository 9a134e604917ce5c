// Wall time and weight bytes per phase of a forward pass, for finding where a decode step's
// time goes (bench_inference --phases). Off by default: a disabled Scope is one branch.
// Not thread-safe by design: scopes are opened only on the thread that drives the forward
// pass (outside parallel regions), and bytes are added there too. The MoE phases cover the
// fused quantised path (moe_fused_quantised), the one decode takes on a GGUF; the MTP module
// is not split out (its layer's scopes add to the same phases).
#pragma once
#include <chrono>
#include <cstdint>

namespace whale::phases {

enum Phase { kEmbedNorm, kAttnProj, kAttnCore, kOProj, kRouter, kMoeUp, kMoeDown, kDenseMlp, kHead, kCount };
const char* name(Phase p);

struct Totals {
  double seconds[kCount] = {};
  double bytes[kCount] = {};
  int64_t calls[kCount] = {};
};
extern bool enabled;
Totals& totals();
void reset();

class Scope {
 public:
  explicit Scope(Phase p, double weight_bytes = 0) : phase_(p) {
    if (!enabled) return;
    start_ = std::chrono::steady_clock::now();
    totals().bytes[p] += weight_bytes;
  }
  ~Scope() {
    if (!enabled) return;
    totals().seconds[phase_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    ++totals().calls[phase_];
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Phase phase_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace whale::phases
