#include "io/gguf_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "core/error.h"
#include "core/rng.h"
#include "io/gguf_tokenizer.h"

namespace whale {

namespace fs = std::filesystem;

namespace {

const std::string kArch = "deepseek2";

// Hugging Face suffix after "model.layers.N." -> GGUF suffix after "blk.N." (gguf-py's
// tensor_mapping for deepseek2; the MTP module's own tensors live under nextn.).
const std::map<std::string, std::string>& layer_names() {
  static const std::map<std::string, std::string> m = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
      {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
      {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
      {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
      {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
      {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"mlp.gate.weight", "ffn_gate_inp.weight"},
      {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
      {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
      {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
      {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
      {"embed_tokens.weight", "nextn.embed_tokens.weight"},
      {"enorm.weight", "nextn.enorm.weight"},
      {"hnorm.weight", "nextn.hnorm.weight"},
      {"eh_proj.weight", "nextn.eh_proj.weight"},
      {"shared_head.norm.weight", "nextn.shared_head_norm.weight"},
      {"shared_head.head.weight", "nextn.shared_head_head.weight"},
  };
  return m;
}

std::string key(const std::string& k) { return kArch + "." + k; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Reads rows [first, first + count) of a GGUF tensor (rows of ne[0] values) as floats.
void read_rows(const GgufFile& f, const GgufTensorInfo& t, int64_t first, int64_t count, float* out) {
  const size_t row_bytes = ggml_row_size(t.type, t.ne[0]);
  const uint8_t* base = f.data(t) + size_t(first) * row_bytes;
#pragma omp parallel for schedule(static) if (count > 64)
  for (int64_t r = 0; r < count; ++r) dequantize_row(t.type, base + size_t(r) * row_bytes, out + r * t.ne[0], t.ne[0]);
}

// Float copy of a whale tensor (F32, BF16 or block-quantised view).
std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> out(size_t(t.numel()));
  GgmlType type;
  if (t.dtype != DType::F32 && t.dtype != DType::BF16 && ggml_type_of(t.dtype, &type)) {
    const int64_t cols = t.shape.back(), rows = t.numel() / cols;
    const size_t row_bytes = ggml_row_size(type, cols);
    for (int64_t r = 0; r < rows; ++r)
      dequantize_row(type, static_cast<const uint8_t*>(t.data) + size_t(r) * row_bytes, out.data() + r * cols, cols);
  } else if (t.dtype == DType::F32) {
    std::memcpy(out.data(), t.data, out.size() * 4);
  } else if (t.dtype == DType::BF16) {
    const uint16_t* h = static_cast<const uint16_t*>(t.data);
    for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(h[i]);
  } else {
    throw Error("export", std::string("tensor of dtype ") + dtype_name(t.dtype) + " cannot be exported");
  }
  return out;
}

void append_rows(GgmlType type, const float* x, int64_t rows, int64_t cols, std::vector<uint8_t>& out) {
  const size_t row_bytes = ggml_row_size(type, cols);
  const size_t at = out.size();
  out.resize(at + size_t(rows) * row_bytes);
#pragma omp parallel for schedule(static) if (rows > 64)
  for (int64_t r = 0; r < rows; ++r) quantize_row(type, x + r * cols, out.data() + at + size_t(r) * row_bytes, cols);
}

}  // namespace

bool is_gguf_file(const std::string& path) {
  if (!fs::is_regular_file(path)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

std::string gguf_tensor_name(const std::string& hf, int64_t* expert) {
  *expert = -1;
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) == 0) {
    const size_t dot = hf.find('.', prefix.size());
    if (dot != std::string::npos) {
      const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
      const std::string rest = hf.substr(dot + 1);
      const std::string blk = "blk." + layer + ".";
      auto it = layer_names().find(rest);
      if (it != layer_names().end()) return blk + it->second;
      const std::string experts = "mlp.experts.";
      if (rest.rfind(experts, 0) == 0) {
        const size_t d2 = rest.find('.', experts.size());
        if (d2 != std::string::npos) {
          *expert = std::stoll(rest.substr(experts.size(), d2 - experts.size()));
          const std::string proj = rest.substr(d2 + 1);
          if (proj == "gate_proj.weight") return blk + "ffn_gate_exps.weight";
          if (proj == "up_proj.weight") return blk + "ffn_up_exps.weight";
          if (proj == "down_proj.weight") return blk + "ffn_down_exps.weight";
        }
      }
    }
  }
  throw Error(hf, "has no deepseek2 GGUF name");
}

GgmlType parse_ggml_type(const std::string& text, const std::string& option) {
  static const std::map<std::string, GgmlType> types = {
      {"f32", GgmlType::F32},   {"f16", GgmlType::F16},   {"bf16", GgmlType::BF16}, {"q8_0", GgmlType::Q8_0},
      {"q4_0", GgmlType::Q4_0}, {"q4_k", GgmlType::Q4_K}, {"q6_k", GgmlType::Q6_K}};
  std::string lower = text;
  for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  auto it = types.find(lower);
  if (it == types.end()) throw Error(option, "'" + text + "' is not a type (expected f32, f16, bf16, q8_0, q4_0, q4_k or q6_k)");
  return it->second;
}

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  if (arch != kArch)
    throw Error(f.path(), "general.architecture is '" + arch + "'; whale reads 'deepseek2' (DeepSeek-V2, V2-Lite, V3, R1)");
  ModelConfig c;
  const int64_t gating = f.get_int(key("expert_gating_func"), 1);  // 1 softmax, 2 sigmoid
  if (gating != 1 && gating != 2)
    throw Error(f.path(), key("expert_gating_func") + " is " + std::to_string(gating) + " (expected 1 softmax or 2 sigmoid)");
  c.scoring_func = gating == 2 ? ScoringFunc::Sigmoid : ScoringFunc::Softmax;
  c.model_type = gating == 2 ? "deepseek_v3" : "deepseek_v2";
  c.hidden_size = f.get_int(key("embedding_length"));
  c.vocab_size = f.has(key("vocab_size")) ? f.get_int(key("vocab_size"))
                 : f.find("token_embd.weight") ? f.tensor("token_embd.weight").ne.back()
                                                  : int64_t(f.get("tokenizer.ggml.tokens").strings.size());
  const int64_t blocks = f.get_int(key("block_count"));
  const int64_t nextn = f.get_int(key("nextn_predict_layers"), 0);
  // MTP layers, when stored, are the last nextn blocks (llama.cpp's convention for nextn).
  if (nextn > 0 && nextn < blocks && f.find("blk." + std::to_string(blocks - 1) + ".nextn.eh_proj.weight")) {
    c.num_hidden_layers = blocks - nextn;
    c.num_nextn_predict_layers = nextn;
  } else {
    c.num_hidden_layers = blocks;
  }
  c.intermediate_size = f.get_int(key("feed_forward_length"), 0);
  c.moe_intermediate_size = f.get_int(key("expert_feed_forward_length"), 0);
  c.first_k_dense_replace = f.get_int(key("leading_dense_block_count"), 0);
  c.num_attention_heads = f.get_int(key("attention.head_count"));
  c.n_routed_experts = f.get_int(key("expert_count"), 0);
  c.n_shared_experts = f.get_int(key("expert_shared_count"), 0);
  c.num_experts_per_tok = f.get_int(key("expert_used_count"), 0);
  c.n_group = f.get_int(key("expert_group_count"), 1);
  c.topk_group = f.get_int(key("expert_group_used_count"), 1);
  c.norm_topk_prob = f.get_bool(key("expert_weights_norm"), false);
  c.routed_scaling_factor = f.get_float(key("expert_weights_scale"), 1.0);
  bool has_bias = false;
  for (int64_t l = 0; l < blocks && !has_bias; ++l) has_bias = f.find("blk." + std::to_string(l) + ".exp_probs_b.bias");
  c.topk_method = has_bias ? TopkMethod::NoauxTc : c.n_group > 1 ? TopkMethod::GroupLimitedGreedy : TopkMethod::Greedy;
  c.q_lora_rank = f.get_int(key("attention.q_lora_rank"), 0);
  c.kv_lora_rank = f.get_int(key("attention.kv_lora_rank"));
  c.qk_rope_head_dim = f.get_int(key("rope.dimension_count"));
  if (f.has(key("attention.key_length_mla"))) {  // MLA stored as MQA: *_mla hold the real head sizes
    c.qk_nope_head_dim = f.get_int(key("attention.key_length_mla")) - c.qk_rope_head_dim;
    c.v_head_dim = f.get_int(key("attention.value_length_mla"));
  } else {
    c.qk_nope_head_dim = f.get_int(key("attention.key_length")) - c.qk_rope_head_dim;
    c.v_head_dim = f.get_int(key("attention.value_length"));
  }
  c.rope_theta = f.get_float(key("rope.freq_base"), 10000.0);
  const std::string scaling = f.get_string(key("rope.scaling.type"), "none");
  if (scaling == "yarn") {
    c.rope_scaling.yarn = true;
    c.rope_scaling.factor = f.get_float(key("rope.scaling.factor"));
    c.rope_scaling.original_max_position_embeddings = f.get_int(key("rope.scaling.original_context_length"), 4096);
    c.rope_scaling.beta_fast = f.get_float(key("rope.scaling.yarn_beta_fast"), 32.0);
    c.rope_scaling.beta_slow = f.get_float(key("rope.scaling.yarn_beta_slow"), 1.0);
    // The converter stores 0.1 * mscale_all_dim. DeepSeek's configs have mscale ==
    // mscale_all_dim (0.707 in V2, 1.0 in V3), which llama.cpp also assumes.
    c.rope_scaling.mscale_all_dim = f.get_float(key("rope.scaling.yarn_log_multiplier"), 0.0) / 0.1;
    c.rope_scaling.mscale = c.rope_scaling.mscale_all_dim;
  } else if (scaling != "none") {
    throw Error(f.path(), key("rope.scaling.type") + " is '" + scaling + "'; whale supports 'yarn' or none");
  }
  c.rms_norm_eps = f.get_float(key("attention.layer_norm_rms_epsilon"), 1e-6);
  c.max_position_embeddings = f.get_int(key("context_length"), 4096);
  c.tie_word_embeddings = f.find("output.weight") == nullptr;
  c.bos_token_id = f.get_int("tokenizer.ggml.bos_token_id", 0);
  c.eos_token_id = f.get_int("tokenizer.ggml.eos_token_id", 1);
  // One set of checks for every source of a config: round-trip through the config.json parser.
  return parse_model_config(model_config_to_json(c), f.path() + " (deepseek2 metadata)");
}

std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& options) {
  auto model = std::make_unique<Model>();
  model->gguf = std::make_unique<GgufFile>(path);
  model->source = path;
  const GgufFile& f = *model->gguf;
  model->config = gguf_model_config(f);
  model->tokenizer = gguf_tokenizer(f);
  const ModelConfig& c = model->config;
  std::map<std::string, Tensor*> bound;
  std::vector<std::pair<Tensor*, std::string>> aliases;
  auto own = [&](int64_t n) {
    model->owned.emplace_back(size_t(n));
    return model->owned.back().data();
  };
  visit_weights(c, model->weights, [&](Tensor& t, const TensorSpec& spec) {
    int64_t expert = -1;
    const std::string name = gguf_tensor_name(spec.name, &expert);
    const std::string where = path + ": tensor '" + name + "'";
    t.shape = spec.shape;
    t.dtype = DType::F32;
    const GgufTensorInfo* info = f.find(name);
    if (!info && name.size() > 17 && name.compare(name.size() - 17, 17, ".attn_kv_b.weight") == 0) {
      // Split layout: k_b [heads, kv_lora_rank, qk_nope] (transposed) and v_b [heads, v_head_dim, kv_lora_rank].
      const std::string base = name.substr(0, name.size() - 17);
      const GgufTensorInfo& kb = f.tensor(base + ".attn_k_b.weight");
      const GgufTensorInfo& vb = f.tensor(base + ".attn_v_b.weight");
      const int64_t H = c.num_attention_heads, R = c.kv_lora_rank, N = c.qk_nope_head_dim, V = c.v_head_dim;
      if (kb.shape() != std::vector<int64_t>{H, R, N} || vb.shape() != std::vector<int64_t>{H, V, R})
        throw Error(path + ": tensors '" + base + ".attn_k_b/v_b.weight'",
                    "have shapes " + shape_str(kb.shape()) + " and " + shape_str(vb.shape()) + "; the metadata implies " +
                        shape_str({H, R, N}) + " and " + shape_str({H, V, R}));
      std::vector<float> k(size_t(H * R * N));
      read_rows(f, kb, 0, H * R, k.data());
      float* dst = own(t.numel());
      for (int64_t h = 0; h < H; ++h) {
        float* head = dst + h * (N + V) * R;
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < R; ++j) head[i * R + j] = k[size_t((h * R + j) * N + i)];
        read_rows(f, vb, h * V, V, head + N * R);
      }
      t.data = dst;
      bound[spec.name] = &t;
      if (ggml_block_size(kb.type) > 1 && ggml_block_size(vb.type) > 1 && options.keep_quantized) {
        // Absorbed decode reads these as mapped (a quarter of F32's bytes for Q8_0): find the
        // AttentionWeights that owns t (kv_b_proj is its member) and give it the views.
        AttentionWeights* a = nullptr;
        for (auto* layers : {&model->weights.layers, &model->weights.mtp})
          for (LayerWeights& l : *layers)
            if (&l.attn.kv_b_proj == &t) a = &l.attn;
        if (a) {
          a->k_b = Tensor{dtype_of(kb.type), {H * R, N}, const_cast<uint8_t*>(f.data(kb))};
          a->v_b = Tensor{dtype_of(vb.type), {H * V, R}, const_cast<uint8_t*>(f.data(vb))};
        }
      }
      return;
    }
    if (!info) {
      if (!spec.alias_of.empty()) {
        aliases.push_back({&t, spec.alias_of});
        return;
      }
      throw Error(path, "missing tensor '" + name + "' (Hugging Face '" + spec.name + "')");
    }
    std::vector<int64_t> want = spec.shape;
    if (expert >= 0) want.insert(want.begin(), c.n_routed_experts);
    if (info->shape() != want)
      throw Error(where, "has shape " + shape_str(info->shape()) + "; the metadata implies " + shape_str(want));
    const int64_t rows = t.numel() / spec.shape.back();
    const int64_t first = expert >= 0 ? expert * rows : 0;
    const size_t row_bytes = ggml_row_size(info->type, info->ne[0]);
    uint8_t* src = const_cast<uint8_t*>(f.data(*info)) + size_t(first) * row_bytes;
    if (info->type == GgmlType::F32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
      t.data = src;  // used in place
    } else if (info->type == GgmlType::BF16 && spec.linear && options.keep_bf16 &&
               reinterpret_cast<uintptr_t>(src) % 2 == 0) {
      t.dtype = DType::BF16;
      t.data = src;
    } else if (ggml_block_size(info->type) > 1 && spec.linear && options.keep_quantized) {
      t.dtype = dtype_of(info->type);  // blocks of one row never straddle rows: ne[0] is whole blocks
      t.data = src;
    } else {
      float* dst = own(t.numel());
      read_rows(f, *info, first, rows, dst);
      t.data = dst;
    }
    if (t.dtype == DType::F32) {
      const float* v = t.f32();
      for (int64_t i = 0; i < t.numel(); ++i)
        if (!std::isfinite(v[i])) throw Error(where, "contains a non-finite value at element " + std::to_string(i));
    }
    bound[spec.name] = &t;
  });
  for (auto& [t, target] : aliases) {
    auto it = bound.find(target);
    if (it == bound.end()) throw Error(path, "missing tensor for '" + target + "'");
    *t = *it->second;
  }
  return model;
}

// ---- export ---------------------------------------------------------------------------

namespace {

uint32_t file_type(GgmlType t) {  // llama_ftype
  switch (t) {
    case GgmlType::F32: return 0;
    case GgmlType::F16: return 1;
    case GgmlType::Q4_0: return 2;
    case GgmlType::Q8_0: return 7;
    case GgmlType::Q4_K: return 15;  // Q4_K_M: q4_K with q6_K output, as llama-quantize does
    case GgmlType::Q6_K: return 18;
    case GgmlType::BF16: return 32;
    case GgmlType::Q8_K: return 0;
  }
  return 0;
}

// The type a tensor is written in: 1-D tensors and the router stay F32 (as llama.cpp's
// converter keeps them); a row length that is not a multiple of the block size falls back
// to Q8_0, then to F16 (F32 for an F32 export), as llama-quantize falls back.
GgmlType tensor_type(const std::string& name, const std::vector<int64_t>& ne, GgmlType want) {
  if (ne.size() == 1 || name.find("ffn_gate_inp") != std::string::npos) return GgmlType::F32;
  if (want == GgmlType::Q4_K && name == "output.weight") want = GgmlType::Q6_K;
  if (ne[0] % ggml_block_size(want) == 0) return want;
  if (ne[0] % QK8_0 == 0) return GgmlType::Q8_0;
  return GgmlType::F16;
}

// A tensor's values as floats in its Hugging Face shape: a checkpoint's data (export) or
// random numbers (write_random_gguf).
using TensorValues = std::function<std::vector<float>(const Tensor&, const TensorSpec&)>;

// The deepseek2 keys and tensors of a model of config c, tensor data from values (called once
// per tensor, or per expert of a stacked tensor, while the file is written).
void write_deepseek2(const ModelConfig& c, const std::string& model_name,
                     const std::function<void(GgufWriter&)>& add_tokenizer, const TensorValues& values,
                     const std::string& path, const GgufExportOptions& options, Progress* progress) {
  GgufWriter w;
  const bool mtp = options.mtp && c.num_nextn_predict_layers > 0;
  const bool split = options.split_kv_b;
  w.add_string("general.architecture", kArch);
  w.add_string("general.name", model_name);
  w.add_u32("general.file_type", file_type(options.type));
  if (ggml_block_size(options.type) > 1) w.add_u32("general.quantization_version", 2);
  w.add_u32(key("context_length"), uint32_t(c.max_position_embeddings));
  w.add_u32(key("embedding_length"), uint32_t(c.hidden_size));
  w.add_u32(key("block_count"), uint32_t(c.num_hidden_layers + (mtp ? c.num_nextn_predict_layers : 0)));
  w.add_u32(key("feed_forward_length"), uint32_t(c.intermediate_size));
  w.add_u32(key("attention.head_count"), uint32_t(c.num_attention_heads));
  // MLA as llama.cpp runs it: with split k_b/v_b, one shared KV "head" of kv_lora_rank (+ rope).
  w.add_u32(key("attention.head_count_kv"), uint32_t(split ? 1 : c.num_attention_heads));
  w.add_f32(key("rope.freq_base"), float(c.rope_theta));
  w.add_f32(key("attention.layer_norm_rms_epsilon"), float(c.rms_norm_eps));
  w.add_u32(key("expert_used_count"), uint32_t(c.num_experts_per_tok));
  w.add_u32(key("leading_dense_block_count"), uint32_t(c.first_k_dense_replace));
  w.add_u32(key("vocab_size"), uint32_t(c.vocab_size));
  if (c.q_lora_rank > 0) w.add_u32(key("attention.q_lora_rank"), uint32_t(c.q_lora_rank));
  w.add_u32(key("attention.kv_lora_rank"), uint32_t(c.kv_lora_rank));
  if (split) {
    w.add_u32(key("attention.key_length"), uint32_t(c.kv_lora_rank + c.qk_rope_head_dim));
    w.add_u32(key("attention.value_length"), uint32_t(c.kv_lora_rank));
    w.add_u32(key("attention.key_length_mla"), uint32_t(c.qk_head_dim()));
    w.add_u32(key("attention.value_length_mla"), uint32_t(c.v_head_dim));
  } else {
    w.add_u32(key("attention.key_length"), uint32_t(c.qk_head_dim()));
    w.add_u32(key("attention.value_length"), uint32_t(c.v_head_dim));
  }
  w.add_u32(key("expert_feed_forward_length"), uint32_t(c.moe_intermediate_size));
  w.add_u32(key("expert_count"), uint32_t(c.n_routed_experts));
  w.add_u32(key("expert_shared_count"), uint32_t(c.n_shared_experts));
  w.add_f32(key("expert_weights_scale"), float(c.routed_scaling_factor));
  w.add_bool(key("expert_weights_norm"), c.norm_topk_prob);
  w.add_u32(key("expert_gating_func"), c.scoring_func == ScoringFunc::Sigmoid ? 2 : 1);
  if (c.topk_method == TopkMethod::GroupLimitedGreedy || c.topk_method == TopkMethod::NoauxTc) {
    w.add_u32(key("expert_group_count"), uint32_t(c.n_group));
    w.add_u32(key("expert_group_used_count"), uint32_t(c.topk_group));
  }
  w.add_u32(key("rope.dimension_count"), uint32_t(c.qk_rope_head_dim));
  if (c.rope_scaling.yarn) {
    w.add_string(key("rope.scaling.type"), "yarn");
    w.add_f32(key("rope.scaling.factor"), float(c.rope_scaling.factor));
    w.add_u32(key("rope.scaling.original_context_length"), uint32_t(c.rope_scaling.original_max_position_embeddings));
    w.add_f32(key("rope.scaling.yarn_log_multiplier"), float(0.1 * c.rope_scaling.mscale_all_dim));
    w.add_f32(key("rope.scaling.yarn_beta_fast"), float(c.rope_scaling.beta_fast));
    w.add_f32(key("rope.scaling.yarn_beta_slow"), float(c.rope_scaling.beta_slow));
  }
  if (mtp) w.add_u32(key("nextn_predict_layers"), uint32_t(c.num_nextn_predict_layers));

  add_tokenizer(w);

  // Tensors, in visit order; routed experts are stacked per layer and projection.
  ModelWeights weights;  // shapes only: visit_weights sizes the layer lists
  std::vector<std::pair<const Tensor*, TensorSpec>> specs;
  visit_weights(c, weights, [&](Tensor& t, const TensorSpec& s) {
    t.shape = s.shape;
    specs.push_back({&t, s});
  });
  std::map<std::string, std::vector<std::pair<const Tensor*, TensorSpec>>> stacks;  // GGUF name -> experts
  std::vector<std::string> order;
  std::map<std::string, std::pair<const Tensor*, TensorSpec>> singles;
  for (const auto& [t, spec] : specs) {
    if (spec.name == "lm_head.weight" && c.tie_word_embeddings) continue;
    int64_t expert = -1;
    const std::string name = gguf_tensor_name(spec.name, &expert);
    if (!mtp && name.find(".nextn.") == std::string::npos && spec.name.rfind("model.layers.", 0) == 0 &&
        std::stoll(spec.name.substr(13)) >= c.num_hidden_layers)
      continue;  // MTP layer, not exported
    if (!mtp && name.find(".nextn.") != std::string::npos) continue;
    if (expert >= 0) {
      if (stacks[name].empty()) order.push_back(name);
      stacks[name].push_back({t, spec});
    } else {
      order.push_back(name);
      singles[name] = {t, spec};
    }
  }
  for (const std::string& name : order) {
    if (stacks.count(name)) {
      const auto& experts = stacks[name];
      const Tensor& first = *experts[0].first;
      const std::vector<int64_t> ne{first.cols(), first.rows(), int64_t(experts.size())};
      const GgmlType type = tensor_type(name, ne, options.type);
      w.add_tensor(name, type, ne, [experts, type, &values](std::vector<uint8_t>& out) {
        for (const auto& [e, spec] : experts) {
          const std::vector<float> x = values(*e, spec);
          append_rows(type, x.data(), e->rows(), e->cols(), out);
        }
      });
      continue;
    }
    const Tensor* t = singles[name].first;
    const TensorSpec spec = singles[name].second;
    const bool kv_b = name.size() > 17 && name.compare(name.size() - 17, 17, ".attn_kv_b.weight") == 0;
    if (kv_b && split) {
      // HF kv_b_proj rows per head: [k_nope (qk_nope_head_dim); v (v_head_dim)] (convert_hf_to_gguf.py).
      const std::string base = name.substr(0, name.size() - 17);
      const int64_t H = c.num_attention_heads, R = c.kv_lora_rank, N = c.qk_nope_head_dim, V = c.v_head_dim;
      const std::vector<int64_t> ne_k{N, R, H}, ne_v{R, V, H};
      const GgmlType tk = tensor_type(base + ".attn_k_b.weight", ne_k, options.type);
      const GgmlType tv = tensor_type(base + ".attn_v_b.weight", ne_v, options.type);
      w.add_tensor(base + ".attn_k_b.weight", tk, ne_k, [t, spec, &values, tk, H, R, N, V](std::vector<uint8_t>& out) {
        const std::vector<float> kv = values(*t, spec);
        std::vector<float> k(size_t(H * R * N));
        for (int64_t h = 0; h < H; ++h)
          for (int64_t j = 0; j < R; ++j)
            for (int64_t i = 0; i < N; ++i) k[size_t((h * R + j) * N + i)] = kv[size_t((h * (N + V) + i) * R + j)];
        append_rows(tk, k.data(), H * R, N, out);
      });
      w.add_tensor(base + ".attn_v_b.weight", tv, ne_v, [t, spec, &values, tv, H, R, N, V](std::vector<uint8_t>& out) {
        const std::vector<float> kv = values(*t, spec);
        for (int64_t h = 0; h < H; ++h) append_rows(tv, kv.data() + (h * (N + V) + N) * R, V, R, out);
      });
      continue;
    }
    std::vector<int64_t> ne(t->shape.rbegin(), t->shape.rend());
    const GgmlType type = tensor_type(name, ne, options.type);
    w.add_tensor(name, type, ne, [t, spec, &values, type](std::vector<uint8_t>& out) {
      const std::vector<float> x = values(*t, spec);
      append_rows(type, x.data(), t->numel() / t->shape.back(), t->shape.back(), out);
    });
  }
  if (progress) progress->start("export " + fs::path(path).filename().string(), int64_t(w.tensor_count()));
  w.write(path, [&](size_t done, size_t) {
    if (progress) progress->update(int64_t(done));
  });
  if (progress) progress->finish();
}

// Approximately normal numbers (Irwin-Hall: the sum of four 16-bit uniforms, rescaled to unit
// variance) from one 64-bit draw each: 10x cheaper than Box-Muller, which matters at 16e9 values.
float fast_normal(Rng& rng) {
  const uint64_t r = rng.next();
  const double sum = double(r & 0xffff) + double((r >> 16) & 0xffff) + double((r >> 32) & 0xffff) + double(r >> 48);
  // Each 16-bit uniform has mean 32767.5 and variance (65536^2 - 1) / 12; four of them 4x that.
  return float((sum - 4 * 32767.5) / std::sqrt(4.0 * (65536.0 * 65536.0 - 1.0) / 12.0));
}

uint64_t name_seed(uint64_t seed, const std::string& name) {  // FNV-1a over the name, then the seed
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return h ^ (seed * 0x9e3779b97f4a7c15ull);
}

}  // namespace

void export_gguf(const Model& model, const std::string& path, const GgufExportOptions& options, Progress* progress) {
  const std::string name =
      model.gguf ? model.gguf->get_string("general.name", "") : fs::path(model.source).filename().string();
  // The visitor walks a fresh ModelWeights (shapes only); find the model's tensor by name.
  std::map<std::string, const Tensor*> data;
  visit_weights(model.config, const_cast<ModelWeights&>(model.weights),
                [&](Tensor& t, const TensorSpec& s) { data[s.name] = &t; });
  auto add_tokenizer = [&](GgufWriter& w) {
    if (model.gguf) {
      copy_gguf_tokenizer(w, *model.gguf);
    } else {
      add_gguf_tokenizer(w, options.tokenizer_dir.empty() ? model.source : options.tokenizer_dir, model.config);
    }
  };
  auto values = [&](const Tensor&, const TensorSpec& spec) {
    const Tensor& t = *data.at(spec.name);
    if (t.empty()) throw Error(spec.name, "tensor has no data to export");
    return to_f32(t);
  };
  write_deepseek2(model.config, name, add_tokenizer, values, path, options, progress);
}

void write_random_gguf(const ModelConfig& config, const std::string& path, const GgufExportOptions& options,
                       const InitOptions& init, Progress* progress) {
  auto add_tokenizer = [&](GgufWriter& w) {
    if (!options.tokenizer_dir.empty() && !add_gguf_tokenizer(w, options.tokenizer_dir, config))
      throw Error(options.tokenizer_dir, "has no tokenizer.json");
  };
  auto values = [&](const Tensor& t, const TensorSpec& spec) {
    // An alias (the MTP module's embedding and head) gets its target's numbers, as init_model copies them.
    const bool alias = !spec.alias_of.empty() && (config.tie_word_embeddings || spec.name != "lm_head.weight");
    const uint64_t seed = name_seed(init.seed, alias ? spec.alias_of : spec.name);
    const int64_t cols = t.shape.back(), rows = t.numel() / cols;
    std::vector<float> x(size_t(t.numel()));
#pragma omp parallel for schedule(static) if (rows > 64)
    for (int64_t r = 0; r < rows; ++r) {
      Rng rng(seed + uint64_t(r) * 0xd1b54a32d192ed03ull);  // one stream per row: any thread count gives the same file
      float* row = x.data() + r * cols;
      for (int64_t i = 0; i < cols; ++i) {
        switch (spec.init) {
          case InitKind::Normal: row[i] = float(init.std) * fast_normal(rng); break;
          case InitKind::Ones: row[i] = 1.0f + (init.norm_jitter > 0 ? float(init.norm_jitter) * fast_normal(rng) : 0.0f); break;
          case InitKind::Zeros: row[i] = init.router_bias_std > 0 ? float(init.router_bias_std) * fast_normal(rng) : 0.0f; break;
        }
      }
    }
    return x;
  };
  write_deepseek2(config, "whale random init", add_tokenizer, values, path, options, progress);
}

}  // namespace whale
