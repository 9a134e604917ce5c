// ModelConfig: the one source of a model's shape, parsed from Hugging Face config.json
// with DeepSeek's own field names (DeepSeek-V2, V2-Lite, V3, V3.1, R1).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace whale {

enum class TopkMethod { Greedy, GroupLimitedGreedy, NoauxTc };
enum class ScoringFunc { Softmax, Sigmoid };

struct RopeScaling {
  bool yarn = false;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 1.0, mscale_all_dim = 0.0;
};

struct ModelConfig {
  std::string model_type = "deepseek_v3";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense SwiGLU layers
  int64_t moe_intermediate_size = 0;  // each routed / shared expert
  int64_t num_hidden_layers = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  int64_t num_attention_heads = 0;
  int64_t n_routed_experts = 0;  // 0: no MoE (config null)
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1, topk_group = 1;
  TopkMethod topk_method = TopkMethod::Greedy;
  ScoringFunc scoring_func = ScoringFunc::Softmax;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int64_t q_lora_rank = 0;  // 0: direct q_proj (config null)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t num_nextn_predict_layers = 0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 0, eos_token_id = 1;
  // FP8 block quantisation of the stored weights (quantization_config.weight_block_size).
  bool fp8 = false;
  int64_t fp8_block_rows = 128, fp8_block_cols = 128;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // Softmax scale of MLA, including YaRN's mscale correction (applied squared).
  double softmax_scale() const;
  int64_t parameter_count(bool include_mtp = true) const;
  int64_t active_parameter_count() const;  // per token: shared + top-k routed experts
};

double yarn_get_mscale(double scale, double mscale);

// Throws whale::Error naming `source` and the field when a value is missing or inconsistent.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);
ModelConfig load_model_config(const std::string& path);
nlohmann::json model_config_to_json(const ModelConfig& c);

}  // namespace whale
