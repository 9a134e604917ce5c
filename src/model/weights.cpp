#include "model/weights.h"

namespace whale {

namespace {

struct Walker {
  const ModelConfig& c;
  const WeightVisitor& visit;

  void tensor(Tensor& t, const std::string& name, std::vector<int64_t> shape, InitKind init,
              bool linear, bool fp8 = true, const std::string& alias = "") {
    TensorSpec spec{name, std::move(shape), init, linear, linear && fp8, alias};
    visit(t, spec);
  }
  void norm(Tensor& t, const std::string& name) { tensor(t, name, {c.hidden_size}, InitKind::Ones, false); }

  void mlp(MlpWeights& m, const std::string& p, int64_t inter) {
    tensor(m.gate_proj, p + "gate_proj.weight", {inter, c.hidden_size}, InitKind::Normal, true);
    tensor(m.up_proj, p + "up_proj.weight", {inter, c.hidden_size}, InitKind::Normal, true);
    tensor(m.down_proj, p + "down_proj.weight", {c.hidden_size, inter}, InitKind::Normal, true);
  }

  void decoder(LayerWeights& l, int64_t index) {
    const std::string p = "model.layers." + std::to_string(index) + ".";
    const int64_t h = c.hidden_size, heads = c.num_attention_heads;
    l.is_moe = c.is_moe_layer(index);
    norm(l.input_layernorm, p + "input_layernorm.weight");
    AttentionWeights& a = l.attn;
    const std::string ap = p + "self_attn.";
    if (c.q_lora_rank > 0) {
      tensor(a.q_a_proj, ap + "q_a_proj.weight", {c.q_lora_rank, h}, InitKind::Normal, true);
      tensor(a.q_a_layernorm, ap + "q_a_layernorm.weight", {c.q_lora_rank}, InitKind::Ones, false);
      tensor(a.q_b_proj, ap + "q_b_proj.weight", {heads * c.qk_head_dim(), c.q_lora_rank}, InitKind::Normal, true);
    } else {
      tensor(a.q_proj, ap + "q_proj.weight", {heads * c.qk_head_dim(), h}, InitKind::Normal, true);
    }
    tensor(a.kv_a_proj_with_mqa, ap + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, h},
           InitKind::Normal, true);
    tensor(a.kv_a_layernorm, ap + "kv_a_layernorm.weight", {c.kv_lora_rank}, InitKind::Ones, false);
    tensor(a.kv_b_proj, ap + "kv_b_proj.weight", {heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank},
           InitKind::Normal, true);
    tensor(a.o_proj, ap + "o_proj.weight", {h, heads * c.v_head_dim}, InitKind::Normal, true);
    norm(l.post_attention_layernorm, p + "post_attention_layernorm.weight");
    if (l.is_moe) {
      MoeWeights& m = l.moe;
      // The router stays in high precision in DeepSeek-V3's FP8 release.
      tensor(m.gate, p + "mlp.gate.weight", {c.n_routed_experts, h}, InitKind::Normal, true, false);
      if (c.topk_method == TopkMethod::NoauxTc)
        tensor(m.e_score_correction_bias, p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts},
               InitKind::Zeros, false);
      m.experts.resize(size_t(c.n_routed_experts));
      for (int64_t e = 0; e < c.n_routed_experts; ++e)
        mlp(m.experts[size_t(e)], p + "mlp.experts." + std::to_string(e) + ".", c.moe_intermediate_size);
      if (c.n_shared_experts > 0)
        mlp(m.shared, p + "mlp.shared_experts.", c.moe_intermediate_size * c.n_shared_experts);
    } else {
      mlp(l.mlp, p + "mlp.", c.intermediate_size);
    }
  }

  void mtp(LayerWeights& l, int64_t index) {
    const std::string p = "model.layers." + std::to_string(index) + ".";
    tensor(l.embed_tokens, p + "embed_tokens.weight", {c.vocab_size, c.hidden_size}, InitKind::Normal, false,
           false, "model.embed_tokens.weight");
    norm(l.enorm, p + "enorm.weight");
    norm(l.hnorm, p + "hnorm.weight");
    tensor(l.eh_proj, p + "eh_proj.weight", {c.hidden_size, 2 * c.hidden_size}, InitKind::Normal, true);
    decoder(l, index);
    norm(l.shared_head_norm, p + "shared_head.norm.weight");
    tensor(l.shared_head_head, p + "shared_head.head.weight", {c.vocab_size, c.hidden_size}, InitKind::Normal,
           true, false, c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  }
};

}  // namespace

void visit_weights(const ModelConfig& config, ModelWeights& w, const WeightVisitor& visit) {
  Walker walk{config, visit};
  walk.tensor(w.embed_tokens, "model.embed_tokens.weight", {config.vocab_size, config.hidden_size},
              InitKind::Normal, false);
  w.layers.resize(size_t(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) walk.decoder(w.layers[size_t(i)], i);
  walk.norm(w.norm, "model.norm.weight");
  if (config.tie_word_embeddings) {
    walk.tensor(w.lm_head, "lm_head.weight", {config.vocab_size, config.hidden_size}, InitKind::Normal, true,
                false, "model.embed_tokens.weight");
  } else {
    walk.tensor(w.lm_head, "lm_head.weight", {config.vocab_size, config.hidden_size}, InitKind::Normal, true,
                false);
  }
  w.mtp.resize(size_t(config.num_nextn_predict_layers));
  for (int64_t k = 0; k < config.num_nextn_predict_layers; ++k)
    walk.mtp(w.mtp[size_t(k)], config.num_hidden_layers + k);
}

std::vector<TensorSpec> weight_specs(const ModelConfig& config) {
  ModelWeights scratch;
  std::vector<TensorSpec> specs;
  visit_weights(config, scratch, [&](Tensor&, const TensorSpec& s) { specs.push_back(s); });
  return specs;
}

int64_t ModelConfig::parameter_count(bool include_mtp) const {
  int64_t n = 0;
  for (const auto& s : weight_specs(*this)) {
    if (!s.alias_of.empty() && (tie_word_embeddings || s.name.find("model.layers.") == 0)) continue;
    if (!include_mtp && s.name.find("model.layers.") == 0) {
      const int64_t layer = std::stoll(s.name.substr(13));
      if (layer >= num_hidden_layers) continue;
    }
    int64_t m = 1;
    for (auto d : s.shape) m *= d;
    n += m;
  }
  return n;
}

int64_t ModelConfig::active_parameter_count() const {
  int64_t total = parameter_count(false);
  if (n_routed_experts == 0) return total;
  int64_t moe_layers = 0;
  for (int64_t i = 0; i < num_hidden_layers; ++i) moe_layers += is_moe_layer(i);
  const int64_t expert = 3 * hidden_size * moe_intermediate_size;
  return total - moe_layers * (n_routed_experts - num_experts_per_tok) * expert;
}

}  // namespace whale
