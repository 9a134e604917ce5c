#include "model/transformer.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "core/error.h"
#include "core/phase_timer.h"
#include "kernels/ops.h"
#include "kernels/qmatmul.h"

namespace whale {

namespace {
enum Slot { kXn, kMlpGate, kMlpUp, kMlpAct, kMtpIn, kMtpX, kAttnOut, kHeadIn, kNumSlots };
}

Transformer::Transformer(const Model& model, AttentionMode mode, WeightRepack repack)
    : model_(model),
      config_(model.config),
      mode_(mode),
      rope_(model.config),
      softmax_scale_(float(model.config.softmax_scale())),
      repack_(repack == WeightRepack::Auto ? model.repack_policy : repack) {
  if (repack_ == WeightRepack::Auto)
    if (const char* env = std::getenv("WHALE_REPACK"); env && *env) {
      const std::string v = env;
      if (v != "0" && v != "1") throw Error("WHALE_REPACK", "is '" + v + "'; expected 0 (off) or 1 (on)");
      repack_ = v == "1" ? WeightRepack::On : WeightRepack::Off;
    }
  const ModelWeights& w = model.weights;
  const int64_t slots = config_.num_hidden_layers + config_.num_nextn_predict_layers;
  kv_b_f32_.resize(size_t(slots));
  router_stats_.resize(size_t(slots));
  for (int64_t s = 0; s < slots; ++s) {
    const LayerWeights& l = s < config_.num_hidden_layers ? w.layers[size_t(s)]
                                                           : w.mtp[size_t(s - config_.num_hidden_layers)];
    const Tensor& t = l.attn.kv_b_proj;
    std::vector<float>& dst = kv_b_f32_[size_t(s)];
    // Block-quantised kv_b (GGUF Q8_0 etc.) stays as mapped: attention dequantises a head's
    // rows when it reads them (mla.cpp), so a decode step reads the quantised bytes, not F32.
    GgmlType stored;
    // With the GGUF split layout kept quantised, absorption reads k_b/v_b and kv_b_proj is the
    // loader's own F32 join, used in place by the naive path: no second copy.
    if ((ggml_type_of(t.dtype, &stored) && ggml_block_size(stored) > 1) || (!l.attn.k_b.empty() && t.dtype == DType::F32)) {
      router_stats_[size_t(s)].expert_tokens.assign(size_t(config_.n_routed_experts), 0);
      continue;
    }
    dst.resize(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r) copy_row(t, r, dst.data() + r * t.cols());
    router_stats_[size_t(s)].expert_tokens.assign(size_t(config_.n_routed_experts), 0);
  }
  buffers_.resize(kNumSlots + 16);
  if (const char* env = std::getenv("WHALE_ABSORB"); env && *env) {
    const std::string v = env;
    if (v != "int8" && v != "f32") throw Error("WHALE_ABSORB", "is '" + v + "'; expected int8 or f32");
    quantised_absorption_ = v == "int8";
  }
  if (const char* env = std::getenv("WHALE_ABSORB_FUSE"); env && std::string(env) == "0") fuse_absorption_ = false;
  if (repack_ != WeightRepack::Off) repack_weights(repack_ == WeightRepack::Auto);
}

std::vector<const Tensor*> Transformer::projection_targets() const {
  std::vector<const Tensor*> targets{&model_.weights.lm_head};
  auto add_mlp = [&](const MlpWeights& m) {
    for (const Tensor* t : {&m.gate_proj, &m.up_proj, &m.down_proj}) targets.push_back(t);
  };
  auto add_layer = [&](const LayerWeights& l) {
    const AttentionWeights& a = l.attn;
    for (const Tensor* t : {&a.q_proj, &a.q_a_proj, &a.q_b_proj, &a.kv_a_proj_with_mqa, &a.o_proj}) targets.push_back(t);
    add_mlp(l.mlp);
    add_mlp(l.moe.shared);
    for (const MlpWeights& e : l.moe.experts) add_mlp(e);
    for (const Tensor* t : {&l.eh_proj, &l.shared_head_head}) targets.push_back(t);
  };
  for (const LayerWeights& l : model_.weights.layers) add_layer(l);
  for (const LayerWeights& l : model_.weights.mtp) add_layer(l);
  return targets;
}

void Transformer::repack_weights(bool check_memory) {
  if (!q8_0_x16_available()) return;
  {
    static std::mutex mutex;  // Transformers built on one model in several threads make one copy
    std::lock_guard<std::mutex> lock(mutex);
    if (!model_.repacked) {
      // Each distinct stored Q8_0 matrix (a GGUF's mapped tensor) once (a tied LM head shares
      // the embedding's data), 64-byte aligned in one arena.
      std::vector<const Tensor*> stored;
      auto repacked = std::make_shared<RepackedWeights>();
      size_t total = 0, source_bytes = 0;  // the arena's bytes, and the mapped rows'
      // Also a GGUF's split k_b / v_b, which absorbed attention reads a head at a time
      // (mla.cpp), when each head's rows are whole tiles.
      std::vector<const Tensor*> targets = projection_targets();
      const auto& c = config_;
      for (const auto* layers : {&model_.weights.layers, &model_.weights.mtp})
        for (const LayerWeights& l : *layers) {
          if (c.kv_lora_rank % 16 == 0) targets.push_back(&l.attn.k_b);
          if (c.v_head_dim % 16 == 0) targets.push_back(&l.attn.v_b);
        }
      for (const Tensor* t : targets) {
        if (t->empty() || t->shape.size() != 2 || t->dtype != DType::Q8_0 || t->cols() % QK8_0 != 0 ||
            repacked->tensors.count(t->data))
          continue;
        const size_t bytes = q8_0_x16_bytes(t->rows(), t->cols());
        repacked->tensors.emplace(t->data, std::make_pair(total, bytes));
        stored.push_back(t);
        total += (bytes + 63) / 64 * 64;
        source_bytes += ggml_row_size(GgmlType::Q8_0, t->cols()) * size_t(t->rows());
      }
      const size_t available = available_memory();
      if (stored.empty() || (check_memory && total + (size_t(1) << 30) > available)) return;
      // The projections no longer read the mapped rows once repacked. When the rows and the copy
      // do not both fit (a 16 GB file and its copy on 24 GB), each matrix's rows are reclaimed
      // right after it is repacked, so the copy does not push out rows still to be read (which
      // would be read from disk twice); otherwise they are only first in line for reclaim.
      const bool tight = total + source_bytes > available;
      repacked->arena = AnonymousMemory(total, "repacked weights");
      for (const Tensor* t : stored) {
        repack_q8_0_x16(t->data, t->rows(), t->cols(), repacked->arena.data() + repacked->tensors.at(t->data).first);
        advise_unneeded(t->data, ggml_row_size(GgmlType::Q8_0, t->cols()) * size_t(t->rows()), tight);
      }
      model_.repacked = std::move(repacked);
    }
  }
  repacked_ = model_.repacked;
  for (const auto& [source, at] : repacked_->tensors)
    quantised_.emplace(source, QuantisedWeight{GgmlType::Q8_0, {}, repacked_->arena.data() + at.first, at.second, true});
}

size_t Transformer::quantize_weights(GgmlType type) {
  if (!qmatmul_supported(type))
    throw Error("quantize", std::string("no quantised kernels for ") + ggml_type_name(type) +
                                "; expected q8_0, q4_0, q4_K or q6_K");
  size_t total = 0;
  std::vector<float> row;
  // Q8_0 copies go into the VNNI kernels' layout (same bits, faster reads) unless turned off.
  const bool x16 = type == GgmlType::Q8_0 && repack_ != WeightRepack::Off && q8_0_x16_available();
  for (const Tensor* t : projection_targets()) {
    if (t->empty() || t->shape.size() != 2 || t->cols() % ggml_block_size(type) != 0 || quantised_.count(t->data)) continue;
    const int64_t N = t->rows(), K = t->cols();
    const size_t row_bytes = ggml_row_size(type, K);
    QuantisedWeight q{type, std::vector<uint8_t>(row_bytes * size_t(N))};
#pragma omp parallel for schedule(static) firstprivate(row)
    for (int64_t r = 0; r < N; ++r) {
      row.resize(size_t(K));
      copy_row(*t, r, row.data());
      quantize_row(type, row.data(), q.data.data() + size_t(r) * row_bytes, K);
    }
    if (x16) {
      std::vector<uint8_t> packed(q8_0_x16_bytes(N, K));
      repack_q8_0_x16(q.data.data(), N, K, packed.data());
      q.data = std::move(packed);
      q.x16 = true;
    }
    total += q.data.size();
    quantised_.emplace(t->data, std::move(q));
  }
  return total;
}

double Transformer::weight_bytes(const Tensor& W) const {
  if (W.empty()) return 0.0;
  auto it = quantised_.find(W.data);
  if (it != quantised_.end()) return double(it->second.size());
  GgmlType stored;
  if (W.shape.size() == 2 && ggml_type_of(W.dtype, &stored)) return double(ggml_row_size(stored, W.cols())) * double(W.rows());
  return double(W.numel()) * double(dtype_size(W.dtype));
}

double Transformer::phase_bytes(std::initializer_list<const Tensor*> weights) const {
  double total = 0;
  if (phases::enabled)
    for (const Tensor* W : weights) total += weight_bytes(*W);
  return total;
}

void Transformer::project(const float* x, int64_t M, const Tensor& W, float* y, bool accumulate) {
  if (!quantised_.empty()) {
    auto it = quantised_.find(W.data);
    if (it != quantised_.end()) {
      const QuantisedWeight& q = it->second;
      if (q.x16) return qmatmul_x16(q.bytes(), W.rows(), W.cols(), x, M, y, accumulate);
      return qmatmul(q.type, q.bytes(), W.rows(), W.cols(), x, M, y, accumulate);
    }
  }
  if (accumulate) {
    linear_accumulate(x, M, W, y);
  } else {
    linear(x, M, W, y);
  }
}

bool Transformer::quantised_form(const Tensor& W, GgmlType* type, const void** data, bool* x16) const {
  *x16 = false;
  if (W.empty() || W.shape.size() != 2) return false;
  if (auto it = quantised_.find(W.data); it != quantised_.end()) {
    *type = it->second.type;
    *data = it->second.bytes();
    *x16 = it->second.x16;
    return true;
  }
  GgmlType stored;
  if (!ggml_type_of(W.dtype, &stored) || ggml_block_size(stored) <= 1 || !qmatmul_supported(stored)) return false;
  *type = stored;
  *data = W.data;
  return true;
}

void Transformer::reset_router_stats() {
  for (auto& s : router_stats_) std::fill(s.expert_tokens.begin(), s.expert_tokens.end(), 0);
}

std::vector<float>& Transformer::buffer(int slot, size_t n) {
  std::vector<float>& b = buffers_[size_t(slot)];
  if (b.size() < n) b.resize(n);
  return b;
}

static int64_t total_rows(const std::vector<SeqSpan>& spans) {
  int64_t T = 0;
  for (const auto& s : spans) {
    if (s.row_begin != T) throw Error("forward", "spans must cover consecutive rows");
    T += s.rows;
  }
  return T;
}

static void check_spans(const std::vector<SeqSpan>& spans, bool mtp) {
  for (const auto& s : spans) {
    const int64_t have = mtp ? s.cache->mtp_length : s.cache->length;
    if (s.pos0 != have)
      throw Error("forward", "span starts at position " + std::to_string(s.pos0) + " but its cache holds " +
                                 std::to_string(have) + " tokens");
    if (s.pos0 + s.rows > s.cache->capacity())
      throw Error("forward", "sequence of " + std::to_string(s.pos0 + s.rows) +
                                 " tokens exceeds the KV cache capacity " + std::to_string(s.cache->capacity()));
  }
}

void Transformer::forward(const int32_t* tokens, const std::vector<SeqSpan>& spans, float* hidden) {
  const int64_t T = total_rows(spans), H = config_.hidden_size;
  check_spans(spans, false);
  const ModelWeights& w = model_.weights;
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= config_.vocab_size)
      throw Error("tokens", "id " + std::to_string(tokens[t]) + " is outside the vocabulary [0, " +
                                std::to_string(config_.vocab_size) + ")");
    copy_row(w.embed_tokens, tokens[t], hidden + t * H);
  }
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l)
    decoder_layer(w.layers[size_t(l)], l, hidden, T, spans, false);
  for (const auto& s : spans) s.cache->length = s.pos0 + s.rows;
}

void Transformer::logits(const float* hidden, const std::vector<int64_t>& rows, float* out) {
  const int64_t H = config_.hidden_size, R = int64_t(rows.size());
  phases::Scope scope(phases::kHead, phase_bytes({&model_.weights.lm_head}));
  std::vector<float>& normed = buffer(kHeadIn, size_t(R * H));
  for (int64_t i = 0; i < R; ++i)
    rmsnorm(hidden + rows[size_t(i)] * H, model_.weights.norm.f32(), normed.data() + i * H, 1, H,
            float(config_.rms_norm_eps));
  project(normed.data(), R, model_.weights.lm_head, out);
}

void Transformer::mtp_logits(const float* hidden, const int32_t* next_tokens, const std::vector<SeqSpan>& spans,
                             float* out, int64_t k) {
  std::vector<int64_t> all(size_t(total_rows(spans)));
  for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
  mtp_logits(hidden, next_tokens, spans, all, out, k);
}

void Transformer::mtp_logits(const float* hidden, const int32_t* next_tokens, const std::vector<SeqSpan>& spans,
                             const std::vector<int64_t>& out_rows, float* out, int64_t k) {
  if (k >= config_.num_nextn_predict_layers) throw Error("mtp", "this model has no MTP layer " + std::to_string(k));
  const int64_t T = total_rows(spans), H = config_.hidden_size;
  check_spans(spans, true);
  const LayerWeights& m = model_.weights.mtp[size_t(k)];
  const float eps = float(config_.rms_norm_eps);
  std::vector<float>& in = buffer(kMtpIn, size_t(T * 2 * H));
  std::vector<float>& x = buffer(kMtpX, size_t(T * H));
  for (int64_t t = 0; t < T; ++t) {
    if (next_tokens[t] < 0 || next_tokens[t] >= config_.vocab_size)
      throw Error("tokens", "id " + std::to_string(next_tokens[t]) + " is outside the vocabulary");
    float* row = in.data() + t * 2 * H;
    copy_row(m.embed_tokens, next_tokens[t], row);
    rmsnorm(row, m.enorm.f32(), row, 1, H, eps);
    rmsnorm(hidden + t * H, m.hnorm.f32(), row + H, 1, H, eps);
  }
  project(in.data(), T, m.eh_proj, x.data());
  decoder_layer(m, config_.num_hidden_layers + k, x.data(), T, spans, true);
  const int64_t R = int64_t(out_rows.size());
  std::vector<float>& normed = buffer(kHeadIn, size_t(R * H));
  for (int64_t i = 0; i < R; ++i) {
    const int64_t r = out_rows[size_t(i)];
    if (r < 0 || r >= T) throw Error("mtp", "output row " + std::to_string(r) + " is outside [0, " + std::to_string(T) + ")");
    rmsnorm(x.data() + r * H, m.shared_head_norm.f32(), normed.data() + i * H, 1, H, eps);
  }
  project(normed.data(), R, m.shared_head_head, out);
  for (const auto& s : spans) s.cache->mtp_length = s.pos0 + s.rows;
}

void Transformer::decoder_layer(const LayerWeights& w, int64_t layer_index, float* x, int64_t T,
                                const std::vector<SeqSpan>& spans, bool mtp) {
  const int64_t H = config_.hidden_size;
  const float eps = float(config_.rms_norm_eps);
  std::vector<float>& xn = buffer(kXn, size_t(T * H));
  {
    phases::Scope scope(phases::kEmbedNorm);
    rmsnorm(x, w.input_layernorm.f32(), xn.data(), T, H, eps);
  }
  std::vector<float>& attn_out = buffer(kAttnOut, size_t(T * config_.num_attention_heads * config_.v_head_dim));
  attention(w, layer_index, xn.data(), T, spans, mtp, attn_out.data());
  {
    phases::Scope scope(phases::kOProj, phase_bytes({&w.attn.o_proj}));
    project(attn_out.data(), T, w.attn.o_proj, x, true);
  }
  {
    phases::Scope scope(phases::kEmbedNorm);
    rmsnorm(x, w.post_attention_layernorm.f32(), xn.data(), T, H, eps);
  }
  if (w.is_moe) {
    moe(w, layer_index, xn.data(), T, x);
  } else {
    phases::Scope scope(phases::kDenseMlp, phase_bytes({&w.mlp.gate_proj, &w.mlp.up_proj, &w.mlp.down_proj}));
    mlp(w.mlp, xn.data(), T, x);
  }
}

void Transformer::mlp(const MlpWeights& w, const float* xn, int64_t T, float* x) {
  const int64_t I = w.gate_proj.rows();
  std::vector<float>& g = buffer(kMlpGate, size_t(T * I));
  std::vector<float>& u = buffer(kMlpUp, size_t(T * I));
  project(xn, T, w.gate_proj, g.data());
  project(xn, T, w.up_proj, u.data());
  silu_mul(g.data(), u.data(), g.data(), T * I);
  project(g.data(), T, w.down_proj, x, true);
}

}  // namespace whale
