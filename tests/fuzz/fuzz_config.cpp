// libFuzzer target for config.json parsing: arbitrary text must either fail JSON parsing,
// raise whale::Error from parse_model_config, or give a config that survives a round trip
// through model_config_to_json unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/kv_cache.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j =
      nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  whale::ModelConfig config;
  try {
    config = whale::parse_model_config(j, "fuzz.json");
  } catch (const whale::Error&) {
    return 0;
  }
  // Derived sizes are int64 arithmetic on the fields; UBSan reports any overflow. Walking the
  // weights costs one entry per expert and layer, so only small configs are counted.
  volatile double scale = config.softmax_scale();
  volatile int64_t kv_bytes = whale::KVCache::bytes_per_token(config);
  if ((double(config.num_hidden_layers) + double(config.num_nextn_predict_layers)) *
          (double(config.n_routed_experts) + 1) <=
      4096) {
    volatile int64_t total = config.parameter_count(true);
    volatile int64_t active = config.active_parameter_count();
    (void)total;
    (void)active;
  }
  (void)scale;
  (void)kv_bytes;
  // Anything whale accepted it must be able to write back and read again identically; an
  // exception here escapes and libFuzzer reports it.
  const nlohmann::json once = whale::model_config_to_json(config);
  const nlohmann::json twice =
      whale::model_config_to_json(whale::parse_model_config(once, "roundtrip"));
  if (once != twice) {
    std::fprintf(stderr, "fuzz_config: round trip changed the config\n%s\n%s\n",
                 once.dump().c_str(), twice.dump().c_str());
    std::abort();
  }
  return 0;
}
