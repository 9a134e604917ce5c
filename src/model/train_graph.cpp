#include "model/train_graph.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "kernels/gemm_bf16.h"
#include "kernels/ops.h"
#include "kernels/quant_sim.h"
#include "model/moe.h"

#include "model/train_layer.h"

namespace whale {

namespace {

// exp(x) for x <= 0 in a form the compiler vectorises (the cross-entropies call it on every
// logit: libm's scalar expf was ~6% of a BF16 step). Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2,
// ln2 split in two (Cody-Waite), degree-6 polynomial; about 1 ulp. Below -87 it returns ~1e-38
// instead of the denormal or zero (nothing a sum of probabilities can see).
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// Cross-entropy of rows of logits against targets; writes dlogits = (softmax - onehot) * scale * mask.
double cross_entropy(float* logits, int64_t rows, int64_t V, const int32_t* targets, const float* mask,
                     double denom, bool backward, float scale) {
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float m = mask ? mask[r] : 1.0f;
    float* l = logits + r * V;
    const int32_t y = targets[r];
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, l[j]);
    const float ly = l[y];
    float z = 0.0f;
    if (backward) {  // keep exp(l - max): the gradient is it / z, one exp per logit instead of two
#pragma omp simd reduction(+ : z)
      for (int64_t j = 0; j < V; ++j) z += (l[j] = exp_nonpositive(l[j] - mx));
    } else {
#pragma omp simd reduction(+ : z)
      for (int64_t j = 0; j < V; ++j) z += exp_nonpositive(l[j] - mx);
    }
    const float logz = std::log(z) + mx;
    if (m != 0.0f) row_loss[size_t(r)] = double(m) * (double(logz) - double(ly));
    if (backward) {
      const float k = float(m * scale / denom);
      const float kz = k / z;
      for (int64_t j = 0; j < V; ++j) l[j] *= kz;
      l[y] -= k;
    }
  }
  double total = 0.0;  // summed in row order: deterministic for any thread count
  for (double v : row_loss) total += v;
  return total;
}

// log p(target) and the entropy of each row's softmax (policy-gradient statistics).
void token_statistics(const float* logits, int64_t rows, int64_t V, const int32_t* targets, float* logp,
                      float* entropy) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * V;
    float mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, l[j]);
    double z = 0.0, zl = 0.0;
    for (int64_t j = 0; j < V; ++j) {
      const double e = std::exp(double(l[j] - mx));
      z += e;
      zl += e * double(l[j] - mx);
    }
    const double logz = std::log(z);  // relative to mx
    logp[r] = float(double(l[targets[r]] - mx) - logz);
    entropy[r] = float(logz - zl / z);  // H = log Z - E_p[l]
  }
}

// Gradient of a loss given through dL/dlogp: dlogits = dlogp * (onehot - softmax) * scale.
void logprob_backward(float* logits, int64_t rows, int64_t V, const int32_t* targets, const float* dlogp,
                      float scale) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* l = logits + r * V;
    const float k = dlogp[r] * scale;
    if (k == 0.0f) {
      std::fill(l, l + V, 0.0f);
      continue;
    }
    float mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, l[j]);
    float z = 0.0f;
    for (int64_t j = 0; j < V; ++j) z += std::exp(l[j] - mx);
    const float logz = std::log(z) + mx;
    for (int64_t j = 0; j < V; ++j) l[j] = -std::exp(l[j] - logz) * k;
    l[targets[r]] += k;
  }
}

}  // namespace

Gradients::Gradients(const Model& model) {
  std::vector<const void*> sources;
  visit_weights(model.config, const_cast<ModelWeights&>(model.weights),
                [&](Tensor& t, const TensorSpec&) { sources.push_back(t.data); });
  std::map<const void*, Tensor*> by_source;
  size_t i = 0;
  visit_weights(model.config, weights, [&](Tensor& t, const TensorSpec& spec) {
    const void* src = sources[i++];
    t.shape = spec.shape;
    t.dtype = DType::F32;
    auto it = by_source.find(src);
    if (src != nullptr && it != by_source.end()) {
      t.data = it->second->data;
      return;
    }
    storage.emplace_back(size_t(t.numel()), 0.0f);
    t.data = storage.back().data();
    by_source[src] = &t;
  });
}

void Gradients::zero() {  // in parallel: one thread's memset of 84M floats was ~3% of a BF16 step
  for (auto& s : storage) {
    float* d = s.data();
    const int64_t n = int64_t(s.size());
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
    for (int64_t b = 0; b < n; b += 1 << 14) std::memset(d + b, 0, size_t(std::min<int64_t>(n - b, 1 << 14)) * 4);
  }
}

TrainGraph::TrainGraph(const Model& model) : model_(model), c_(model.config), rope_(model.config) {
  const auto check = [&](const Tensor& t, const char* what) {
    if (!t.empty() && t.dtype != DType::F32)
      throw Error(what, "training needs F32 master weights; load the checkpoint with keep_bf16 = false");
  };
  check(model.weights.lm_head, "lm_head.weight");
  for (const auto& l : model.weights.layers) check(l.attn.o_proj, "o_proj");
  for (int64_t i = 0; i < c_.num_hidden_layers + c_.num_nextn_predict_layers; ++i)
    acts_.push_back(new LayerActivations());
}

TrainGraph::~TrainGraph() {  // out of line: Bf16State is complete here
  for (auto* a : acts_) delete a;
}

unsigned parse_fp8_fp32_parts(const std::string& list) {
  static const std::map<std::string, unsigned> names = {
      {"x", kFp8Activations}, {"w", kFp8Weights}, {"dy", kFp8OutputGrads}, {"wgrad", kFp8Wgrad},
      {"attn", kFp8Attention}, {"experts", kFp8Experts}, {"mlp", kFp8Mlp}};
  unsigned parts = 0;
  size_t begin = 0;
  while (begin <= list.size() && !list.empty()) {
    const size_t end = std::min(list.find(',', begin), list.size());
    const std::string name = list.substr(begin, end - begin);
    const auto it = names.find(name);
    if (it == names.end())
      throw Error("WHALE_FP8_FP32", "lists '" + name + "'; expected a comma-separated list of x, w, dy, wgrad, attn, "
                                    "experts, mlp");
    parts |= it->second;
    begin = end + 1;
  }
  return parts;
}

unsigned fp8_fp32_parts_from_env() {
  const char* env = std::getenv("WHALE_FP8_FP32");
  return env ? parse_fp8_fp32_parts(env) : 0u;
}

void TrainGraph::set_precision(const std::string& name) {
  if (name == "fp32") precision_ = TrainPrecision::FP32;
  else if (name == "bf16") precision_ = TrainPrecision::BF16;
  else if (name == "fp8") precision_ = TrainPrecision::FP8;
  else throw Error("--precision", "'" + name + "' is not a compute mode (expected fp32, bf16 or fp8)");
  fp8_fp32_parts_ = precision_ == TrainPrecision::FP8 ? fp8_fp32_parts_from_env() : 0u;
}

size_t TrainGraph::activation_bytes() const {
  size_t total = 0;
  for (const LayerActivations* a : acts_) {
    for (const auto* v : {&a->x_in, &a->xn1, &a->r1, &a->qa, &a->qan, &a->rqa, &a->q, &a->kvc, &a->latent, &a->rkv,
                          &a->kpe, &a->kv, &a->probs, &a->attn, &a->x_mid, &a->xn2, &a->r2, &a->g, &a->u, &a->act,
                          &a->scores, &a->gate_w, &a->eg, &a->eu, &a->eact, &a->eout})
      total += v->size() * sizeof(float);
    total += a->idx.size() * sizeof(int32_t) + (a->order.size() + a->offsets.size()) * sizeof(int64_t);
  }
  return total;
}

LossReport TrainGraph::forward(const TrainBatch& batch, const LossOptions& options) {
  return run(batch, options, nullptr, 1.0f);
}

LossReport TrainGraph::forward_backward(const TrainBatch& batch, const LossOptions& options, Gradients& grads,
                                        float grad_scale) {
  return run(batch, options, &grads, grad_scale);
}


LossReport TrainGraph::run(const TrainBatch& batch, const LossOptions& options, Gradients* grads, float grad_scale) {
  const ModelConfig& c = c_;
  const ModelWeights& w = model_.weights;
  const int64_t B = batch.B, T = batch.T, N = B * T, H = c.hidden_size, V = c.vocab_size;
  if (B <= 0 || T <= 0) throw Error("batch", "needs at least one sequence of at least 2 tokens");
  for (int64_t i = 0; i < B * (T + 1); ++i)
    if (batch.tokens[i] < 0 || batch.tokens[i] >= V)
      throw Error("tokens", "id " + std::to_string(batch.tokens[i]) + " is outside the vocabulary [0, " +
                                std::to_string(V) + ")");
  auto tok = [&](int64_t b, int64_t t) { return batch.tokens[b * (T + 1) + t]; };
  const float eps = float(c.rms_norm_eps);
  const bool backward = grads != nullptr;
  LossReport rep;
  const int64_t slots = c.num_hidden_layers + c.num_nextn_predict_layers;
  rep.expert_load.assign(size_t(slots), std::vector<int64_t>(size_t(c.n_routed_experts), 0));
  Quantizer quant;
  quant.precision = precision_;
  quant.fp32_parts = fp8_fp32_parts_;
  if (precision_ == TrainPrecision::BF16 && !simulate_bf16_) {
    if (!bf16_) bf16_ = std::make_unique<Bf16State>();
    bf16_->new_step();  // the optimizer moved the weights since the last step
    if (bf16_->gemm.native()) quant.fast = bf16_.get();
  }
  if (!scratch_) scratch_ = std::make_unique<TrainScratch>();
  LayerContext ctx{c, rope_, B, T, &quant, scratch_.get()};
  // Packed rows: each row's position within its segment. The backward needs nothing else, since
  // probabilities outside a segment are exactly zero.
  std::vector<int32_t> positions, mtp_positions;
  if (batch.segment_ids) {
    positions.resize(size_t(N));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t r = b * T + t;
        positions[size_t(r)] = t > 0 && batch.segment_ids[r] == batch.segment_ids[r - 1] ? positions[size_t(r - 1)] + 1 : 0;
      }
    ctx.pos = positions.data();
  }

  std::vector<float> x(size_t(N * H));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) copy_row(w.embed_tokens, tok(b, t), x.data() + (b * T + t) * H);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    layer_forward(ctx, w.layers[size_t(l)], *acts_[size_t(l)], x.data(), rep.expert_load[size_t(l)]);
  const std::vector<float> h_final = x;  // pre-norm: the MTP module's input (DeepSeek-V3 eq. 21)

  // Main head: mean cross-entropy of next-token prediction.
  std::vector<float> hf(size_t(N * H)), rf(static_cast<size_t>(N));
  std::vector<float>& logits = logits_;  // kept across steps: a fresh N x V buffer page-faulted every step
  resize(logits, N * V);
  rmsnorm_save(h_final.data(), w.norm.f32(), hf.data(), rf.data(), N, H, eps);
  quant.head_linear(hf.data(), N, w.lm_head, logits.data());
  std::vector<int32_t> targets(static_cast<size_t>(N));
  double denom = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      targets[size_t(b * T + t)] = tok(b, t + 1);
      denom += batch.loss_mask ? batch.loss_mask[b * T + t] : 1.0;
    }
  if (denom <= 0) throw Error("loss_mask", "masks out every target; nothing to learn from");
  rep.main_targets = int64_t(denom);
  if (options.token_stats || options.token_loss) {
    rep.target_logprobs.resize(size_t(N));
    rep.entropy.resize(size_t(N));
    token_statistics(logits.data(), N, V, targets.data(), rep.target_logprobs.data(), rep.entropy.data());
  }
  if (options.token_loss) {
    std::vector<float> dlogp(size_t(N), 0.0f);
    rep.main_loss = options.token_loss(rep.target_logprobs.data(), dlogp.data());
    if (backward) logprob_backward(logits.data(), N, V, targets.data(), dlogp.data(), grad_scale);
  } else {
    rep.main_loss =
        cross_entropy(logits.data(), N, V, targets.data(), batch.loss_mask, denom, backward, grad_scale) / denom;
  }

  if (options.balance_alpha > 0)
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      if (w.layers[size_t(l)].is_moe) rep.balance_loss += balance_loss(ctx, *acts_[size_t(l)], 1.0, nullptr);

  // MTP: row (b, i) combines h_i with the embedding of token i+1 and predicts token i+2.
  const bool mtp = options.mtp_lambda > 0 && c.num_nextn_predict_layers > 0 && T >= 2;
  const int64_t Tm = T - 1, Nm = B * Tm;
  LayerContext mctx{c, rope_, B, Tm, &quant, scratch_.get()};
  if (batch.segment_ids && Tm > 0) {  // MTP row i belongs to token i's segment
    mtp_positions.resize(size_t(B * Tm));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Tm; ++i) mtp_positions[size_t(b * Tm + i)] = positions[size_t(b * T + i)];
    mctx.pos = mtp_positions.data();
  }
  std::vector<float> e_raw, e_n, e_r, h_rows, h_n, h_r, cat, xm, hm, hm_r;
  std::vector<float>& mlogits = mtp_logits_;
  std::vector<int32_t> mtargets;
  double mdenom = 0.0;
  if (mtp) {
    const LayerWeights& m = w.mtp[0];
    e_raw.resize(size_t(Nm * H));
    e_n.resize(size_t(Nm * H));
    e_r.resize(static_cast<size_t>(Nm));
    h_n.resize(size_t(Nm * H));
    h_r.resize(static_cast<size_t>(Nm));
    cat.resize(size_t(Nm * 2 * H));
    h_rows.resize(size_t(Nm * H));
    mtargets.resize(static_cast<size_t>(Nm));
    std::vector<float> mmask(static_cast<size_t>(Nm));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Tm; ++i) {
        const int64_t r = b * Tm + i;
        copy_row(m.embed_tokens, tok(b, i + 1), e_raw.data() + r * H);
        std::memcpy(h_rows.data() + r * H, h_final.data() + (b * T + i) * H, size_t(H) * 4);
        mtargets[size_t(r)] = tok(b, i + 2);
        mmask[size_t(r)] = batch.loss_mask ? batch.loss_mask[b * T + i + 1] : 1.0f;
        mdenom += mmask[size_t(r)];
      }
    rmsnorm_save(e_raw.data(), m.enorm.f32(), e_n.data(), e_r.data(), Nm, H, eps);
    rmsnorm_save(h_rows.data(), m.hnorm.f32(), h_n.data(), h_r.data(), Nm, H, eps);
    for (int64_t r = 0; r < Nm; ++r) {
      std::memcpy(cat.data() + r * 2 * H, e_n.data() + r * H, size_t(H) * 4);
      std::memcpy(cat.data() + r * 2 * H + H, h_n.data() + r * H, size_t(H) * 4);
    }
    xm.resize(size_t(Nm * H));
    quant.head_linear(cat.data(), Nm, m.eh_proj, xm.data());
    layer_forward(mctx, m, *acts_[size_t(c.num_hidden_layers)], xm.data(), rep.expert_load[size_t(c.num_hidden_layers)]);
    hm.resize(size_t(Nm * H));
    hm_r.resize(static_cast<size_t>(Nm));
    rmsnorm_save(xm.data(), m.shared_head_norm.f32(), hm.data(), hm_r.data(), Nm, H, eps);
    resize(mlogits, Nm * V);
    quant.head_linear(hm.data(), Nm, m.shared_head_head, mlogits.data());
    if (mdenom > 0) {
      rep.mtp_targets = int64_t(mdenom);
      rep.mtp_loss = cross_entropy(mlogits.data(), Nm, V, mtargets.data(), mmask.data(), mdenom, backward,
                                   float(grad_scale * options.mtp_lambda)) / mdenom;
    }
  }
  rep.loss = rep.main_loss + (mtp ? options.mtp_lambda * rep.mtp_loss : 0.0) + options.balance_alpha * rep.balance_loss;
  if (!backward) return rep;

  Gradients& g = *grads;
  std::vector<float> dx(size_t(N * H), 0.0f), dhf(size_t(N * H));
  quant.head_linear_backward(hf.data(), N, w.lm_head, logits.data(), dhf.data(), g.weights.lm_head.f32());
  rmsnorm_backward(h_final.data(), w.norm.f32(), rf.data(), dhf.data(), dx.data(), g.weights.norm.f32(), N, H, false);
  if (mtp && mdenom > 0) {
    const LayerWeights& m = w.mtp[0];
    LayerWeights& gm = g.weights.mtp[0];
    std::vector<float> dhm(size_t(Nm * H)), dxm(size_t(Nm * H), 0.0f), dcat(size_t(Nm * 2 * H));
    quant.head_linear_backward(hm.data(), Nm, m.shared_head_head, mlogits.data(), dhm.data(), gm.shared_head_head.f32());
    rmsnorm_backward(xm.data(), m.shared_head_norm.f32(), hm_r.data(), dhm.data(), dxm.data(),
                     gm.shared_head_norm.f32(), Nm, H, false);
    layer_backward(mctx, m, gm, *acts_[size_t(c.num_hidden_layers)], dxm.data(), 0.0);
    quant.head_linear_backward(cat.data(), Nm, m.eh_proj, dxm.data(), dcat.data(), gm.eh_proj.f32());
    std::vector<float> de(size_t(Nm * H)), dh(size_t(Nm * H)), dhr(size_t(Nm * H));
    for (int64_t r = 0; r < Nm; ++r) {
      std::memcpy(de.data() + r * H, dcat.data() + r * 2 * H, size_t(H) * 4);
      std::memcpy(dh.data() + r * H, dcat.data() + r * 2 * H + H, size_t(H) * 4);
    }
    std::vector<float> dembed(size_t(Nm * H));
    rmsnorm_backward(e_raw.data(), m.enorm.f32(), e_r.data(), de.data(), dembed.data(), gm.enorm.f32(), Nm, H, false);
    rmsnorm_backward(h_rows.data(), m.hnorm.f32(), h_r.data(), dh.data(), dhr.data(), gm.hnorm.f32(), Nm, H, false);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Tm; ++i) {
        const int64_t r = b * Tm + i;
        axpy(1.0f, dembed.data() + r * H, gm.embed_tokens.f32() + int64_t(tok(b, i + 1)) * H, H);
        axpy(1.0f, dhr.data() + r * H, dx.data() + (b * T + i) * H, H);
      }
  }
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l)
    layer_backward(ctx, w.layers[size_t(l)], g.weights.layers[size_t(l)], *acts_[size_t(l)], dx.data(),
                   options.balance_alpha * grad_scale);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      axpy(1.0f, dx.data() + (b * T + t) * H, g.weights.embed_tokens.f32() + int64_t(tok(b, t)) * H, H);
  return rep;
}

}  // namespace whale
