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

namespace whale {

// Everything one decoder layer's backward needs, for N = B * T rows.
struct LayerActivations {
  std::vector<float> x_in, xn1, r1;       // layer input, input_layernorm output, its inverse rms
  std::vector<float> qa, qan, rqa;        // q LoRA: q_a_proj output, normalised, inverse rms
  std::vector<float> q;                   // [N, heads * qk_head_dim], rope part rotated
  std::vector<float> kvc, latent, rkv;    // compressed kv (raw), normalised latent, inverse rms
  std::vector<float> kpe;                 // [N, rope] rotated shared key
  std::vector<float> kv;                  // [N, heads * (nope + v)] expanded keys and values
  std::vector<float> probs;               // [B, heads, T, T] attention probabilities
  std::vector<float> attn;                // [N, heads * v]
  std::vector<float> x_mid, xn2, r2;      // after attention, post_attention_layernorm output
  std::vector<float> g, u, act;           // dense MLP (or shared experts) intermediates
  // MoE
  std::vector<float> scores, gate_w;      // [N, E] router scores (unbiased), [N, K] gate weights
  std::vector<int32_t> idx;               // [N, K] chosen experts
  std::vector<int64_t> order, offsets;    // assignments (row * K + k) grouped by expert; offsets[E + 1]
  std::vector<float> eg, eu, eact, eout;  // per grouped assignment
};

// BF16 operands for oneDNN, buffers reused across steps. Each weight is rounded once per step
// (its forward GEMM and its Dgrad share the copy). An activation the backward keeps (a
// LayerActivations member) is rounded once in the forward and its BF16 copy kept, under a key the
// call site names, for its Wgrad; other activations and gradients are rounded once per GEMM call.
struct Bf16State {
  GemmBf16 gemm;
  std::unordered_map<const float*, std::vector<uint16_t>> weights;
  std::unordered_set<const float*> fresh;  // weights rounded in this step
  std::vector<uint16_t> x16, dy16;
  struct Kept {
    std::vector<uint16_t> data;
    int64_t n = 0;
    bool valid = false;  // rounded in this step's forward
  };
  std::unordered_map<const void*, Kept> kept;
  const uint16_t* last_x = nullptr;  // BF16 copy of the last GEMM's x (for same_x)

  // At the start of a step: drop the copies the last step did not make (a key that no longer
  // exists), mark the others stale.
  void new_step() {
    fresh.clear();
    for (auto it = kept.begin(); it != kept.end();) {
      if (!it->second.valid) it = kept.erase(it);
      else it->second.valid = false, ++it;
    }
    last_x = nullptr;
  }
  // x's BF16 copy for a forward GEMM; with a key, kept for the backward's Wgrad.
  const uint16_t* input(const float* x, int64_t n, const void* key) {
    if (!key) return last_x = activation(x, n, x16);
    Kept& k = kept[key];
    if (k.data.size() < size_t(n)) k.data.resize(size_t(n));
    round_to_bf16(x, k.data.data(), n);
    k.n = n;
    k.valid = true;
    return last_x = k.data.data();
  }
  // x's BF16 copy for a Wgrad: the forward's if it kept one under key (same x, same size).
  const uint16_t* wgrad_input(const float* x, int64_t n, const void* key) {
    if (key) {
      const auto it = kept.find(key);
      if (it != kept.end() && it->second.valid && it->second.n == n) return last_x = it->second.data.data();
    }
    return last_x = activation(x, n, x16);
  }

  const uint16_t* weight(const Tensor& W) {
    std::vector<uint16_t>& w = weights[W.f32()];
    if (fresh.insert(W.f32()).second) {
      w.resize(size_t(W.numel()));
      round_to_bf16(W.f32(), w.data(), W.numel());
    }
    return w.data();
  }
  const uint16_t* activation(const float* x, int64_t n, std::vector<uint16_t>& buf) {
    if (buf.size() < size_t(n)) buf.resize(size_t(n));
    round_to_bf16(x, buf.data(), n);
    return buf.data();
  }
};

// Temporaries of one layer's forward and backward, kept across layers and steps: as fresh vectors
// (several MB each) they were page-faulted in at every layer of every step.
struct TrainScratch {
  std::vector<float> kva, router_logits, xe;                                       // forward
  std::vector<float> dact, dg, du;                                                 // dense MLP / shared experts
  std::vector<float> dq, dkv, dkpe, dP, dlatent, dkva, dkvc, dqan, dqa;            // attention
  std::vector<float> dgate_w, dye, dxe, edact, edg, edu, dscores, dlogits;         // routed experts, router
  std::vector<float> dxn, dattn;                                                   // layer
};

namespace {

// n zeroed floats in v, as a fresh std::vector<float>(n) would give, without reallocating once v
// has held n.
std::vector<float>& zeros(std::vector<float>& v, int64_t n) {
  v.assign(size_t(n), 0.0f);
  return v;
}

// Sizes an activation buffer. Every caller overwrites all of it (GEMMs with beta 0, norms,
// softmax rows, every routed assignment), so it is zeroed only when its size changes: the
// memset of every activation at every step was ~3% of a BF16 step.
void resize(std::vector<float>& v, int64_t n) {
  if (v.size() != size_t(n)) v.assign(size_t(n), 0.0f);
}

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

// ---------------------------------------------------------------------------------------------
// One decoder layer, forward and backward.

namespace {

// Compute precision of the decoder layers' projections: operands are rounded to BF16, or
// quantised to FP8 E4M3 the way DeepSeek-V3 trains (section 3.3: 1x128 tiles for activations and
// gradients along the contraction, 128x1 tiles for Wgrad's token contraction, 128x128 blocks for
// weights), then multiplied with FP32 accumulation. In FP8 mode embedding, router, norms,
// attention core, eh_proj and output heads stay FP32, as in V3. BF16 mode rounds the operands of
// every matmul except the MoE router's (as torch.autocast runs linear and bmm in BF16): the
// projections, the attention core's GEMMs, eh_proj and the output heads.
// BF16 runs on oneDNN's BF16 GEMM (GemmBf16) where it has a hardware kernel: the same products
// of rounded operands, accumulated in FP32, as the simulation (round, then SGEMM), which is the
// fallback and the reference the fast path is tested against. FP8 is simulated.
struct Quantizer {
  TrainPrecision precision = TrainPrecision::FP32;
  Bf16State* fast = nullptr;  // BF16 through oneDNN (null: simulated)
  std::vector<float> xq, wq, dyq;
  // FP8 mode only: parts kept in FP32 (WHALE_FP8_FP32, an experiment knob) and the module whose
  // projections run now (set by the layer code before its GEMMs).
  unsigned fp32_parts = 0;
  unsigned module = kFp8Attention;
  bool fp8(unsigned part) const { return (fp32_parts & (part | module)) == 0; }

  const float* rows(const float* x, int64_t M, int64_t K, std::vector<float>& buf) {
    if (precision == TrainPrecision::FP32) return x;
    buf.resize(size_t(M * K));
    if (precision == TrainPrecision::BF16) {
      for (int64_t i = 0; i < M * K; ++i) buf[size_t(i)] = bf16_to_f32(f32_to_bf16(x[i]));
    } else {
      fake_quant_fp8_tiles(x, buf.data(), M, K, 128);
    }
    return buf.data();
  }
  Tensor weight(const Tensor& W) {
    if (precision == TrainPrecision::FP32) return W;
    const int64_t N = W.rows(), K = W.cols();
    wq.resize(size_t(N * K));
    if (precision == TrainPrecision::BF16) {
      const float* w = W.f32();
      for (int64_t i = 0; i < N * K; ++i) wq[size_t(i)] = bf16_to_f32(f32_to_bf16(w[i]));
    } else {
      fake_quant_fp8_blocks(W.f32(), wq.data(), N, K, 128, 128);
    }
    return Tensor{DType::F32, W.shape, wq.data()};
  }
  // same_x: x is the input of the previous linear (or, in linear_backward, of the previous Wgrad)
  // unchanged, so its BF16 copy is reused instead of rounded again (gate/up, q_a/kv_a).
  // keep: x stays unchanged until the backward, which passes the same key to linear_backward, so
  // the BF16 copy made here serves its Wgrad (x itself, or, for a gathered x, a stable address
  // unique to this GEMM).
  void linear(const float* x, int64_t M, const Tensor& W, float* y, bool accumulate = false, bool same_x = false,
              const void* keep = nullptr) {
    if (fast) {
      const int64_t N = W.rows(), K = W.cols();
      const uint16_t* x16 = same_x ? fast->last_x : fast->input(x, M * K, keep);
      fast->gemm.gemm(false, true, M, N, K, 1.0f, x16, K, fast->weight(W), K, accumulate ? 1.0f : 0.0f, y, N);
      return;
    }
    const bool fp8_mode = precision == TrainPrecision::FP8;
    const float* xq_ = fp8_mode && !fp8(kFp8Activations) ? x : rows(x, M, W.cols(), xq);
    const Tensor wq_ = fp8_mode && !fp8(kFp8Weights) ? W : weight(W);
    if (accumulate) whale::linear_accumulate(xq_, M, wq_, y);
    else whale::linear(xq_, M, wq_, y);
  }
  void linear_accumulate(const float* x, int64_t M, const Tensor& W, float* y) { linear(x, M, W, y, true); }
  void linear_backward(const float* x, int64_t M, const Tensor& W, const float* dy, float* dx, bool acc, float* dW,
                       bool same_x = false, const void* kept = nullptr) {
    if (fast) {
      if (M == 0) return;
      const int64_t N = W.rows(), K = W.cols();
      const uint16_t* dy16 = fast->activation(dy, M * N, fast->dy16);
      if (dx) fast->gemm.gemm(false, false, M, K, N, 1.0f, dy16, N, fast->weight(W), K, acc ? 1.0f : 0.0f, dx, K);
      if (dW) {
        const uint16_t* x16 = same_x ? fast->last_x : fast->wgrad_input(x, M * K, kept);
        fast->gemm.gemm(true, false, N, K, M, 1.0f, dy16, N, x16, K, 1.0f, dW, K);
      }
      return;
    }
    if (precision != TrainPrecision::FP8) {
      const float* dy_ = rows(dy, M, W.rows(), dyq);
      const float* x_ = rows(x, M, W.cols(), xq);
      whale::linear_backward(x_, M, weight(W), dy_, dx, acc, dW);
      return;
    }
    // Dgrad contracts over dy's channels: dy in 1x128 tiles, W in 128x128 blocks.
    if (dx)
      whale::linear_backward(nullptr, M, fp8(kFp8Weights) ? weight(W) : W,
                             fp8(kFp8OutputGrads) ? rows(dy, M, W.rows(), dyq) : dy, dx, acc, nullptr);
    if (!fp8(kFp8Wgrad)) {
      whale::linear_backward(x, M, W, dy, nullptr, false, dW);
      return;
    }
    // Wgrad contracts over tokens: both operands in 128x1 tiles (V3 section 3.5.2).
    dyq.resize(size_t(M * W.rows()));
    xq.resize(size_t(M * W.cols()));
    fake_quant_fp8_column_tiles(dy, dyq.data(), M, W.rows(), 128);
    fake_quant_fp8_column_tiles(x, xq.data(), M, W.cols(), 128);
    whale::linear_backward(xq.data(), M, W, dyq.data(), nullptr, false, dW);
  }
  // The attention core's GEMMs (scores, probabilities times values, and their backward), row-major
  // C = alpha op(A) op(B) + beta C: BF16 operands in BF16 mode (as autocast runs bmm), FP32 otherwise.
  // Softmax and its backward stay FP32.
  void attention_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (fast) {
      fast->gemm.gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    if (precision == TrainPrecision::BF16) {  // simulated: dense rounded copies of the two blocks
      const auto round_block = [](const float* x, int64_t rows, int64_t cols, int64_t ld, std::vector<float>& out) {
        out.resize(size_t(rows * cols));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) out[size_t(r * cols + c)] = bf16_to_f32(f32_to_bf16(x[r * ld + c]));
      };
      round_block(A, ta ? K : M, ta ? M : K, lda, xq);
      round_block(B, tb ? N : K, tb ? K : N, ldb, wq);
      A = xq.data();
      lda = ta ? M : K;
      B = wq.data();
      ldb = tb ? K : N;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
                alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  }
  // Output heads and eh_proj: BF16 in BF16 mode, FP32 otherwise.
  void head_linear(const float* x, int64_t M, const Tensor& W, float* y) {
    if (precision == TrainPrecision::BF16) linear(x, M, W, y);
    else whale::linear(x, M, W, y);
  }
  void head_linear_backward(const float* x, int64_t M, const Tensor& W, const float* dy, float* dx, float* dW) {
    if (precision == TrainPrecision::BF16) linear_backward(x, M, W, dy, dx, false, dW);
    else whale::linear_backward(x, M, W, dy, dx, false, dW);
  }
};

struct LayerContext {
  const ModelConfig& c;
  const Rope& rope;
  int64_t B, T;
  Quantizer* q;
  TrainScratch* ws;
  const int32_t* pos = nullptr;  // [B * T] position of each row within its segment (null: r % T)
};

void mlp_forward(Quantizer& q, const MlpWeights& w, const float* xn, int64_t N, std::vector<float>& g,
                 std::vector<float>& u, std::vector<float>& act, float* x) {
  q.module = kFp8Mlp;
  const int64_t I = w.gate_proj.rows();
  resize(g, N * I);
  resize(u, N * I);
  resize(act, N * I);
  q.linear(xn, N, w.gate_proj, g.data(), false, false, xn);  // xn, act: kept for the backward
  q.linear(xn, N, w.up_proj, u.data(), false, true);
  silu_mul(g.data(), u.data(), act.data(), N * I);
  q.linear(act.data(), N, w.down_proj, x, true, false, act.data());
}

// dy: gradient of the MLP output; dxn accumulates the gradient of its input.
void mlp_backward(Quantizer& q, TrainScratch& ws, const MlpWeights& w, MlpWeights* gw, const float* xn, int64_t N,
                  const std::vector<float>& g, const std::vector<float>& u, const std::vector<float>& act,
                  const float* dy, float* dxn) {
  q.module = kFp8Mlp;
  const int64_t I = w.gate_proj.rows();
  std::vector<float>&dact = zeros(ws.dact, N * I), &dg = zeros(ws.dg, N * I), &du = zeros(ws.du, N * I);
  q.linear_backward(act.data(), N, w.down_proj, dy, dact.data(), false, gw->down_proj.f32(), false, act.data());
  silu_mul_backward(g.data(), u.data(), dact.data(), dg.data(), du.data(), N * I);
  q.linear_backward(xn, N, w.gate_proj, dg.data(), dxn, true, gw->gate_proj.f32(), false, xn);
  q.linear_backward(xn, N, w.up_proj, du.data(), dxn, true, gw->up_proj.f32(), true);
}

void attention_forward(const LayerContext& ctx, const LayerWeights& w, LayerActivations& a) {
  ctx.q->module = kFp8Attention;  // o_proj too (layer_forward)
  const ModelConfig& c = ctx.c;
  const int64_t B = ctx.B, T = ctx.T, N = B * T;
  const int64_t heads = c.num_attention_heads, qhd = c.qk_head_dim(), nope = c.qk_nope_head_dim;
  const int64_t rank = c.kv_lora_rank, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const float eps = float(c.rms_norm_eps);
  resize(a.q, N * heads * qhd);
  std::vector<float>& kva = zeros(ctx.ws->kva, N * (rank + rope));
  ctx.q->linear(a.xn1.data(), N, w.attn.kv_a_proj_with_mqa, kva.data(), false, false, a.xn1.data());
  if (c.q_lora_rank > 0) {  // after kv_a: both read xn1 (one BF16 copy)
    resize(a.qa, N * c.q_lora_rank);
    resize(a.qan, N * c.q_lora_rank);
    resize(a.rqa, N);
    ctx.q->linear(a.xn1.data(), N, w.attn.q_a_proj, a.qa.data(), false, true);
    rmsnorm_save(a.qa.data(), w.attn.q_a_layernorm.f32(), a.qan.data(), a.rqa.data(), N, c.q_lora_rank, eps);
    ctx.q->linear(a.qan.data(), N, w.attn.q_b_proj, a.q.data(), false, false, a.qan.data());
  } else {
    ctx.q->linear(a.xn1.data(), N, w.attn.q_proj, a.q.data(), false, true);
  }
  resize(a.kvc, N * rank);
  resize(a.latent, N * rank);
  resize(a.rkv, N);
  resize(a.kpe, N * rope);
  for (int64_t r = 0; r < N; ++r) {
    std::memcpy(a.kvc.data() + r * rank, kva.data() + r * (rank + rope), size_t(rank) * 4);
    std::memcpy(a.kpe.data() + r * rope, kva.data() + r * (rank + rope) + rank, size_t(rope) * 4);
    const int64_t pos = ctx.pos ? ctx.pos[r] : r % T;
    ctx.rope.apply(a.kpe.data() + r * rope, pos);
    for (int64_t h = 0; h < heads; ++h) ctx.rope.apply(a.q.data() + (r * heads + h) * qhd + nope, pos);
  }
  rmsnorm_save(a.kvc.data(), w.attn.kv_a_layernorm.f32(), a.latent.data(), a.rkv.data(), N, rank, eps);
  resize(a.kv, N * heads * (nope + vd));
  ctx.q->linear(a.latent.data(), N, w.attn.kv_b_proj, a.kv.data(), false, false, a.latent.data());
  resize(a.probs, B * heads * T * T);
  resize(a.attn, N * heads * vd);
  const float scale = float(c.softmax_scale());
  const int64_t q_ld = heads * qhd, kv_ld = heads * (nope + vd), o_ld = heads * vd;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      float* P = a.probs.data() + (b * heads + h) * T * T;
      const float* Qn = a.q.data() + b * T * q_ld + h * qhd;
      const float* Kn = a.kv.data() + b * T * kv_ld + h * (nope + vd);
      const float* Kp = a.kpe.data() + b * T * rope;
      ctx.q->attention_gemm(false, true, T, T, nope, scale, Qn, q_ld, Kn, kv_ld, 0.0f, P, T);
      ctx.q->attention_gemm(false, true, T, T, rope, scale, Qn + nope, q_ld, Kp, rope, 1.0f, P, T);
      for (int64_t i = 0; i < T; ++i) {
        float* row = P + i * T;
        // causal within the segment: keys start..i
        const int64_t start = ctx.pos ? i - ctx.pos[b * T + i] : 0;
        std::fill(row, row + start, 0.0f);
        softmax(row + start, i - start + 1);
        std::fill(row + i + 1, row + T, 0.0f);
      }
      ctx.q->attention_gemm(false, false, T, vd, T, 1.0f, P, T, Kn + nope, kv_ld, 0.0f, a.attn.data() + b * T * o_ld + h * vd, o_ld);
    }
  }
}

// d_attn: gradient of the attention output [N, heads * v]; accumulates into dxn1.
void attention_backward(const LayerContext& ctx, const LayerWeights& w, LayerWeights& gw, const LayerActivations& a,
                        const float* d_attn, float* dxn1) {
  ctx.q->module = kFp8Attention;
  const ModelConfig& c = ctx.c;
  const int64_t B = ctx.B, T = ctx.T, N = B * T;
  const int64_t heads = c.num_attention_heads, qhd = c.qk_head_dim(), nope = c.qk_nope_head_dim;
  const int64_t rank = c.kv_lora_rank, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const float scale = float(c.softmax_scale());
  const int64_t q_ld = heads * qhd, kv_ld = heads * (nope + vd), o_ld = heads * vd;
  TrainScratch& ws = *ctx.ws;
  std::vector<float>&dq = zeros(ws.dq, N * q_ld), &dkv = zeros(ws.dkv, N * kv_ld), &dkpe = zeros(ws.dkpe, N * rope),
  &dP = zeros(ws.dP, T * T);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* P = a.probs.data() + (b * heads + h) * T * T;
      const float* dO = d_attn + b * T * o_ld + h * vd;
      const float* Qn = a.q.data() + b * T * q_ld + h * qhd;
      const float* Kn = a.kv.data() + b * T * kv_ld + h * (nope + vd);
      const float* V = Kn + nope;
      const float* Kp = a.kpe.data() + b * T * rope;
      float* dQn = dq.data() + b * T * q_ld + h * qhd;
      float* dKn = dkv.data() + b * T * kv_ld + h * (nope + vd);
      // dV = P^T dO ; dP = dO V^T
      ctx.q->attention_gemm(true, false, T, vd, T, 1.0f, P, T, dO, o_ld, 0.0f, dKn + nope, kv_ld);
      ctx.q->attention_gemm(false, true, T, T, vd, 1.0f, dO, o_ld, V, kv_ld, 0.0f, dP.data(), T);
      // dS = P * (dP - sum_j dP_j P_j), times the softmax scale
      for (int64_t i = 0; i < T; ++i) {
        const float* p = P + i * T;
        float* d = dP.data() + i * T;
        double s = 0.0;
        for (int64_t j = 0; j <= i; ++j) s += double(d[j]) * p[j];
        for (int64_t j = 0; j < T; ++j) d[j] = j <= i ? float(p[j] * (d[j] - s)) * scale : 0.0f;
      }
      ctx.q->attention_gemm(false, false, T, nope, T, 1.0f, dP.data(), T, Kn, kv_ld, 0.0f, dQn, q_ld);
      ctx.q->attention_gemm(false, false, T, rope, T, 1.0f, dP.data(), T, Kp, rope, 0.0f, dQn + nope, q_ld);
      ctx.q->attention_gemm(true, false, T, nope, T, 1.0f, dP.data(), T, Qn, q_ld, 0.0f, dKn, kv_ld);
      ctx.q->attention_gemm(true, false, T, rope, T, 1.0f, dP.data(), T, Qn + nope, q_ld, 1.0f, dkpe.data() + b * T * rope, rope);
    }
  }
  // Undo the rotations: gradients w.r.t. the unrotated q_pe and k_pe.
  for (int64_t r = 0; r < N; ++r) {
    const int64_t pos = ctx.pos ? ctx.pos[r] : r % T;
    ctx.rope.apply_backward(dkpe.data() + r * rope, pos);
    for (int64_t h = 0; h < heads; ++h) ctx.rope.apply_backward(dq.data() + (r * heads + h) * qhd + nope, pos);
  }
  // kv = latent kv_b^T ; latent = rmsnorm(kvc)
  std::vector<float>&dlatent = zeros(ws.dlatent, N * rank), &dkva = zeros(ws.dkva, N * (rank + rope)),
  &dkvc = zeros(ws.dkvc, N * rank);
  ctx.q->linear_backward(a.latent.data(), N, w.attn.kv_b_proj, dkv.data(), dlatent.data(), false, gw.attn.kv_b_proj.f32(), false,
                         a.latent.data());
  rmsnorm_backward(a.kvc.data(), w.attn.kv_a_layernorm.f32(), a.rkv.data(), dlatent.data(), dkvc.data(),
                   gw.attn.kv_a_layernorm.f32(), N, rank, false);
  for (int64_t r = 0; r < N; ++r) {
    std::memcpy(dkva.data() + r * (rank + rope), dkvc.data() + r * rank, size_t(rank) * 4);
    std::memcpy(dkva.data() + r * (rank + rope) + rank, dkpe.data() + r * rope, size_t(rope) * 4);
  }
  if (c.q_lora_rank > 0) {
    std::vector<float>&dqan = zeros(ws.dqan, N * c.q_lora_rank), &dqa = zeros(ws.dqa, N * c.q_lora_rank);
    ctx.q->linear_backward(a.qan.data(), N, w.attn.q_b_proj, dq.data(), dqan.data(), false, gw.attn.q_b_proj.f32(),
                           false, a.qan.data());
    rmsnorm_backward(a.qa.data(), w.attn.q_a_layernorm.f32(), a.rqa.data(), dqan.data(), dqa.data(),
                     gw.attn.q_a_layernorm.f32(), N, c.q_lora_rank, false);
    ctx.q->linear_backward(a.xn1.data(), N, w.attn.q_a_proj, dqa.data(), dxn1, true, gw.attn.q_a_proj.f32(), false,
                           a.xn1.data());
  } else {
    ctx.q->linear_backward(a.xn1.data(), N, w.attn.q_proj, dq.data(), dxn1, true, gw.attn.q_proj.f32(), false,
                           a.xn1.data());
  }
  // last: its Wgrad reuses the forward's BF16 copy of xn1 that q_a's (or q_proj's) just used
  ctx.q->linear_backward(a.xn1.data(), N, w.attn.kv_a_proj_with_mqa, dkva.data(), dxn1, true,
                         gw.attn.kv_a_proj_with_mqa.f32(), true);
}

void moe_forward(const LayerContext& ctx, const LayerWeights& w, LayerActivations& a, float* x,
                 std::vector<int64_t>& load) {
  const ModelConfig& c = ctx.c;
  const int64_t N = ctx.B * ctx.T, E = c.n_routed_experts, K = c.num_experts_per_tok, H = c.hidden_size;
  const int64_t I = c.moe_intermediate_size;
  std::vector<float>& logits = zeros(ctx.ws->router_logits, N * E);
  linear(a.xn2.data(), N, w.moe.gate, logits.data());
  resize(a.scores, N * E);
  for (int64_t r = 0; r < N; ++r) {
    float* s = a.scores.data() + r * E;
    const float* l = logits.data() + r * E;
    if (c.scoring_func == ScoringFunc::Sigmoid) {
      for (int64_t e = 0; e < E; ++e) s[e] = 1.0f / (1.0f + std::exp(-l[e]));
    } else {
      std::copy(l, l + E, s);
      softmax(s, E);
    }
  }
  a.idx.assign(size_t(N * K), 0);
  resize(a.gate_w, N * K);
  route_tokens(c, logits.data(), w.moe.e_score_correction_bias.empty() ? nullptr : w.moe.e_score_correction_bias.f32(),
               N, a.idx.data(), a.gate_w.data());
  a.offsets.assign(size_t(E + 1), 0);
  for (int64_t j = 0; j < N * K; ++j) a.offsets[size_t(a.idx[size_t(j)] + 1)]++;
  for (int64_t e = 0; e < E; ++e) a.offsets[size_t(e + 1)] += a.offsets[size_t(e)];
  a.order.assign(size_t(N * K), 0);
  std::vector<int64_t> fill(a.offsets.begin(), a.offsets.end() - 1);
  for (int64_t j = 0; j < N * K; ++j) a.order[size_t(fill[size_t(a.idx[size_t(j)])]++)] = j;
  resize(a.eg, N * K * I);
  resize(a.eu, N * K * I);
  resize(a.eact, N * K * I);
  resize(a.eout, N * K * H);
  std::vector<float>& xe = zeros(ctx.ws->xe, N * K * H);
  ctx.q->module = kFp8Experts;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t lo = a.offsets[size_t(e)], n = a.offsets[size_t(e + 1)] - lo;
    load[size_t(e)] += n;
    if (n == 0) continue;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t row = a.order[size_t(lo + j)] / K;
      std::memcpy(xe.data() + j * H, a.xn2.data() + row * H, size_t(H) * 4);
    }
    const MlpWeights& ex = w.moe.experts[size_t(e)];
    const void* xe_key = a.eg.data() + lo * I;  // xe is gathered again in the backward: a stable key
    ctx.q->linear(xe.data(), n, ex.gate_proj, a.eg.data() + lo * I, false, false, xe_key);
    ctx.q->linear(xe.data(), n, ex.up_proj, a.eu.data() + lo * I, false, true);
    silu_mul(a.eg.data() + lo * I, a.eu.data() + lo * I, a.eact.data() + lo * I, n * I);
    ctx.q->linear(a.eact.data() + lo * I, n, ex.down_proj, a.eout.data() + lo * H, false, false, a.eact.data() + lo * I);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t asg = a.order[size_t(lo + j)];
      axpy(a.gate_w[size_t(asg)], a.eout.data() + (lo + j) * H, x + (asg / K) * H, H);
    }
  }
  if (c.n_shared_experts > 0) mlp_forward(*ctx.q, w.moe.shared, a.xn2.data(), N, a.g, a.u, a.act, x);
}

// Complementary sequence-wise balance loss (DeepSeek-V3 eq. 17-20) of one layer, averaged over
// the B sequences. With grad != null, adds alpha * dL/ds to grad [N, E].
double balance_loss(const LayerContext& ctx, const LayerActivations& a, double alpha, float* grad) {
  const ModelConfig& c = ctx.c;
  const int64_t B = ctx.B, T = ctx.T, E = c.n_routed_experts, K = c.num_experts_per_tok;
  double total = 0.0;
  std::vector<double> f(static_cast<size_t>(E)), P(static_cast<size_t>(E));
  for (int64_t b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = b * T + t;
      for (int64_t k = 0; k < K; ++k) f[size_t(a.idx[size_t(r * K + k)])] += double(E) / double(K * T);
      const float* s = a.scores.data() + r * E;
      double sum = 0.0;
      for (int64_t e = 0; e < E; ++e) sum += s[e];
      for (int64_t e = 0; e < E; ++e) P[size_t(e)] += s[e] / sum / double(T);
    }
    double l = 0.0;
    for (int64_t e = 0; e < E; ++e) l += f[size_t(e)] * P[size_t(e)];
    total += l / double(B);
    if (!grad) continue;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = b * T + t;
      const float* s = a.scores.data() + r * E;
      double sum = 0.0, gs = 0.0;
      for (int64_t e = 0; e < E; ++e) sum += s[e];
      // dL/ds'_e = alpha f_e / (T B); s'_e = s_e / sum: ds_e = (g_e - sum_j g_j s'_j) / sum
      for (int64_t e = 0; e < E; ++e) gs += f[size_t(e)] * s[e] / sum;
      for (int64_t e = 0; e < E; ++e)
        grad[r * E + e] += float(alpha / double(T * B) * (f[size_t(e)] - gs) / sum);
    }
  }
  return total;
}

void moe_backward(const LayerContext& ctx, const LayerWeights& w, LayerWeights& gw, const LayerActivations& a,
                  const float* dy, float* dxn2, double balance_alpha) {
  const ModelConfig& c = ctx.c;
  const int64_t N = ctx.B * ctx.T, E = c.n_routed_experts, K = c.num_experts_per_tok, H = c.hidden_size;
  const int64_t I = c.moe_intermediate_size;
  TrainScratch& ws = *ctx.ws;
  std::vector<float>& dgate_w = zeros(ws.dgate_w, N * K);
  ctx.q->module = kFp8Experts;
  std::vector<float>&xe = zeros(ws.xe, N * K * H), &dye = zeros(ws.dye, N * K * H), &dxe = zeros(ws.dxe, N * K * H);
  std::vector<float>&dact = zeros(ws.edact, N * K * I), &dg = zeros(ws.edg, N * K * I), &du = zeros(ws.edu, N * K * I);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t lo = a.offsets[size_t(e)], n = a.offsets[size_t(e + 1)] - lo;
    if (n == 0) continue;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t asg = a.order[size_t(lo + j)], row = asg / K;
      std::memcpy(xe.data() + j * H, a.xn2.data() + row * H, size_t(H) * 4);
      const float* d = dy + row * H;
      const float gwt = a.gate_w[size_t(asg)];
      for (int64_t i = 0; i < H; ++i) dye[size_t(j * H + i)] = gwt * d[i];
      dgate_w[size_t(asg)] = dot(d, a.eout.data() + (lo + j) * H, H);
    }
    const MlpWeights& ex = w.moe.experts[size_t(e)];
    MlpWeights& gx = gw.moe.experts[size_t(e)];
    ctx.q->linear_backward(a.eact.data() + lo * I, n, ex.down_proj, dye.data(), dact.data(), false, gx.down_proj.f32(),
                           false, a.eact.data() + lo * I);
    silu_mul_backward(a.eg.data() + lo * I, a.eu.data() + lo * I, dact.data(), dg.data(), du.data(), n * I);
    ctx.q->linear_backward(xe.data(), n, ex.gate_proj, dg.data(), dxe.data(), false, gx.gate_proj.f32(), false,
                           a.eg.data() + lo * I);
    ctx.q->linear_backward(xe.data(), n, ex.up_proj, du.data(), dxe.data(), true, gx.up_proj.f32(), true);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t row = a.order[size_t(lo + j)] / K;
      axpy(1.0f, dxe.data() + j * H, dxn2 + row * H, H);
    }
  }
  // Router: gate weights w_k = c * s_k / D (normalised) or c * s_k, D = sum of chosen s + 1e-20.
  std::vector<float>& dscores = zeros(ws.dscores, N * E);
  const double scaling = c.routed_scaling_factor;
  const bool normalise = K > 1 && c.norm_topk_prob;
  for (int64_t r = 0; r < N; ++r) {
    const float* s = a.scores.data() + r * E;
    const int32_t* idx = a.idx.data() + r * K;
    const float* dw = dgate_w.data() + r * K;
    float* ds = dscores.data() + r * E;
    if (normalise) {
      double D = 1e-20, cross = 0.0;
      for (int64_t k = 0; k < K; ++k) D += s[idx[k]];
      for (int64_t k = 0; k < K; ++k) cross += double(dw[k]) * s[idx[k]];
      for (int64_t k = 0; k < K; ++k) ds[idx[k]] += float(scaling * (dw[k] / D - cross / (D * D)));
    } else {
      for (int64_t k = 0; k < K; ++k) ds[idx[k]] += float(scaling * dw[k]);
    }
  }
  if (balance_alpha > 0) balance_loss(ctx, a, balance_alpha, dscores.data());
  std::vector<float>& dlogits = zeros(ws.dlogits, N * E);
  for (int64_t r = 0; r < N; ++r) {
    const float* s = a.scores.data() + r * E;
    const float* ds = dscores.data() + r * E;
    float* dl = dlogits.data() + r * E;
    if (c.scoring_func == ScoringFunc::Sigmoid) {
      for (int64_t e = 0; e < E; ++e) dl[e] = ds[e] * s[e] * (1.0f - s[e]);
    } else {
      double dotp = 0.0;
      for (int64_t e = 0; e < E; ++e) dotp += double(ds[e]) * s[e];
      for (int64_t e = 0; e < E; ++e) dl[e] = float(s[e] * (ds[e] - dotp));
    }
  }
  linear_backward(a.xn2.data(), N, w.moe.gate, dlogits.data(), dxn2, true, gw.moe.gate.f32());
  if (c.n_shared_experts > 0)
    mlp_backward(*ctx.q, ws, w.moe.shared, &gw.moe.shared, a.xn2.data(), N, a.g, a.u, a.act, dy, dxn2);
}

// x [N, H]: layer input, replaced by the layer output.
void layer_forward(const LayerContext& ctx, const LayerWeights& w, LayerActivations& a, float* x,
                   std::vector<int64_t>& load) {
  const ModelConfig& c = ctx.c;
  const int64_t N = ctx.B * ctx.T, H = c.hidden_size;
  const float eps = float(c.rms_norm_eps);
  a.x_in.assign(x, x + N * H);
  resize(a.xn1, N * H);
  resize(a.r1, N);
  rmsnorm_save(x, w.input_layernorm.f32(), a.xn1.data(), a.r1.data(), N, H, eps);
  attention_forward(ctx, w, a);
  ctx.q->linear(a.attn.data(), N, w.attn.o_proj, x, true, false, a.attn.data());
  a.x_mid.assign(x, x + N * H);
  resize(a.xn2, N * H);
  resize(a.r2, N);
  rmsnorm_save(x, w.post_attention_layernorm.f32(), a.xn2.data(), a.r2.data(), N, H, eps);
  if (w.is_moe) {
    moe_forward(ctx, w, a, x, load);
  } else {
    mlp_forward(*ctx.q, w.mlp, a.xn2.data(), N, a.g, a.u, a.act, x);
  }
}

// dx [N, H]: gradient of the layer output, replaced by the gradient of the layer input.
void layer_backward(const LayerContext& ctx, const LayerWeights& w, LayerWeights& gw, const LayerActivations& a,
                    float* dx, double balance_alpha) {
  const ModelConfig& c = ctx.c;
  const int64_t N = ctx.B * ctx.T, H = c.hidden_size;
  std::vector<float>& dxn = zeros(ctx.ws->dxn, N * H);
  if (w.is_moe) {
    moe_backward(ctx, w, gw, a, dx, dxn.data(), balance_alpha);
  } else {
    mlp_backward(*ctx.q, *ctx.ws, w.mlp, &gw.mlp, a.xn2.data(), N, a.g, a.u, a.act, dx, dxn.data());
  }
  rmsnorm_backward(a.x_mid.data(), w.post_attention_layernorm.f32(), a.r2.data(), dxn.data(), dx,
                   gw.post_attention_layernorm.f32(), N, H, true);
  std::vector<float>& dattn = zeros(ctx.ws->dattn, N * c.num_attention_heads * c.v_head_dim);
  ctx.q->module = kFp8Attention;
  ctx.q->linear_backward(a.attn.data(), N, w.attn.o_proj, dx, dattn.data(), false, gw.attn.o_proj.f32(), false,
                         a.attn.data());
  std::fill(dxn.begin(), dxn.end(), 0.0f);
  attention_backward(ctx, w, gw, a, dattn.data(), dxn.data());
  rmsnorm_backward(a.x_in.data(), w.input_layernorm.f32(), a.r1.data(), dxn.data(), dx, gw.input_layernorm.f32(), N,
                   H, true);
}

}  // namespace

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
  if (precision_ == TrainPrecision::FP8) quant.fp32_parts = fp8_fp32_parts_from_env();
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
