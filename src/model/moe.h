// DeepSeekMoE routing (DeepSeek-V3 paper, section 2.1.2, equations 12-16).
#pragma once
#include <cstdint>

#include "model/config.h"

namespace whale {

// From router logits [T, n_routed_experts] picks num_experts_per_tok experts per token:
// scores by softmax or sigmoid; the correction bias (noaux_tc) shifts the choice only;
// group-limited routing keeps the topk_group best groups; gate weights come from the unbiased
// scores, optionally normalised, then multiplied by routed_scaling_factor.
// experts/weights: [T, num_experts_per_tok]. bias may be null.
void route_tokens(const ModelConfig& config, const float* logits, const float* bias, int64_t T, int32_t* experts,
                  float* weights);

}  // namespace whale
