#include "core/phase_timer.h"

namespace whale::phases {

bool enabled = false;

Totals& totals() {
  static Totals t;
  return t;
}

void reset() { totals() = Totals{}; }

const char* name(Phase p) {
  static const char* const names[kCount] = {"embed+norms", "attn q/kv_a", "attn core", "attn o_proj", "router",
                                            "moe gate/up", "moe down",    "dense mlp", "lm head"};
  return names[p];
}

}  // namespace whale::phases
