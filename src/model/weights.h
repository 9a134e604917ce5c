// The model's tensors. One function, visit_weights(), walks every tensor with its official
// Hugging Face name and shape; allocation, random init, loading, saving (and later the
// optimizer) all go through it, so adding a tensor is one edit.
#pragma once
#include <cassert>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/config.h"

namespace whale {

// A non-owning view. Linear weights may be F32 or BF16 (memory-mapped as stored);
// everything else is F32.
struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  void* data = nullptr;

  bool empty() const { return data == nullptr; }
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  float* f32() const {
    assert(dtype == DType::F32);
    return static_cast<float*>(data);
  }
};

enum class InitKind { Normal, Ones, Zeros };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  InitKind init = InitKind::Normal;
  bool linear = false;        // a projection matrix [out, in]; may be BF16 or FP8-stored
  bool fp8_eligible = false;  // stored as FP8 with block scales in an FP8 checkpoint (as V3 does)
  std::string alias_of;       // optional: when absent from a file, share this tensor
};

struct MlpWeights {
  Tensor gate_proj;  // [intermediate, hidden]
  Tensor up_proj;    // [intermediate, hidden]
  Tensor down_proj;  // [hidden, intermediate]
};

struct AttentionWeights {
  Tensor q_proj;              // [heads * qk_head_dim, hidden] when q_lora_rank is null
  Tensor q_a_proj;            // [q_lora_rank, hidden]
  Tensor q_a_layernorm;       // [q_lora_rank]
  Tensor q_b_proj;            // [heads * qk_head_dim, q_lora_rank]
  Tensor kv_a_proj_with_mqa;  // [kv_lora_rank + qk_rope_head_dim, hidden]
  Tensor kv_a_layernorm;      // [kv_lora_rank]
  Tensor kv_b_proj;           // [heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]
  Tensor o_proj;              // [hidden, heads * v_head_dim]
  // GGUF split layout (attn_k_b + attn_v_b) in a block-quantised type only: the file's tensors as
  // mapped, read by the absorbed attention instead of kv_b_proj (which the loader still joins to
  // F32 for the naive path and export). Not visited by visit_weights: views, never saved.
  Tensor k_b;  // [heads * kv_lora_rank, qk_nope_head_dim]: each head's W_UK transposed
  Tensor v_b;  // [heads * v_head_dim, kv_lora_rank]: each head's W_UV
};

struct MoeWeights {
  Tensor gate;                     // [n_routed_experts, hidden] router
  Tensor e_score_correction_bias;  // [n_routed_experts], noaux_tc only; selection only
  std::vector<MlpWeights> experts;
  MlpWeights shared;  // intermediate = moe_intermediate_size * n_shared_experts
};

struct LayerWeights {
  bool is_moe = false;
  Tensor input_layernorm;           // [hidden]
  Tensor post_attention_layernorm;  // [hidden]
  AttentionWeights attn;
  MlpWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
  // MTP module only (model.layers.{num_hidden_layers}.*)
  Tensor enorm, hnorm;      // [hidden]
  Tensor eh_proj;           // [hidden, 2 * hidden]: input is concat(enorm(emb), hnorm(h))
  Tensor embed_tokens;      // [vocab, hidden], normally equal to the main embedding
  Tensor shared_head_norm;  // [hidden]
  Tensor shared_head_head;  // [vocab, hidden], normally equal to lm_head
};

struct ModelWeights {
  Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<LayerWeights> mtp;  // num_nextn_predict_layers entries
  Tensor norm;                    // [hidden]
  Tensor lm_head;                 // [vocab, hidden]; aliases embed_tokens when tied
};

using WeightVisitor = std::function<void(Tensor&, const TensorSpec&)>;

// Sizes the layer vectors from the config and calls visit for every tensor, in checkpoint order.
void visit_weights(const ModelConfig& config, ModelWeights& weights, const WeightVisitor& visit);
std::vector<TensorSpec> weight_specs(const ModelConfig& config);

}  // namespace whale
