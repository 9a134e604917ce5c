// Internal to the training graph (train_graph.cpp, train_layer.cpp): the activations one decoder
// layer keeps for its backward, the per-step scratch, the compute-precision quantiser (FP32, BF16
// on oneDNN or simulated, simulated FP8), and one decoder layer's forward and backward.
#pragma once

#include <cblas.h>

#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/dtype.h"
#include "kernels/gemm_bf16.h"
#include "kernels/ops.h"
#include "kernels/quant_sim.h"
#include "model/train_graph.h"

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

// n zeroed floats in v, as a fresh std::vector<float>(n) would give, without reallocating once v
// has held n.
inline std::vector<float>& zeros(std::vector<float>& v, int64_t n) {
  v.assign(size_t(n), 0.0f);
  return v;
}

// Sizes an activation buffer. Every caller overwrites all of it (GEMMs with beta 0, norms,
// softmax rows, every routed assignment), so it is zeroed only when its size changes: the
// memset of every activation at every step was ~3% of a BF16 step.
inline void resize(std::vector<float>& v, int64_t n) {
  if (v.size() != size_t(n)) v.assign(size_t(n), 0.0f);
}

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

// One decoder layer (attention, then the dense MLP or the MoE). layer_forward: x [N, H], the layer
// input, is replaced by its output, and the routed experts' loads are added to load.
void layer_forward(const LayerContext& ctx, const LayerWeights& w, LayerActivations& a, float* x,
                   std::vector<int64_t>& load);
// dx [N, H]: the gradient of the layer output, replaced by the gradient of the layer input.
void layer_backward(const LayerContext& ctx, const LayerWeights& w, LayerWeights& gw, const LayerActivations& a,
                    float* dx, double balance_alpha);
// Complementary sequence-wise balance loss (DeepSeek-V3 eq. 17-20) of one layer, averaged over
// the B sequences. With grad != null, adds alpha * dL/ds to grad [N, E].
double balance_loss(const LayerContext& ctx, const LayerActivations& a, double alpha, float* grad);

}  // namespace whale
