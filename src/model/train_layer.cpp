// One decoder layer's forward and backward for the training graph (train_layer.h).
#include "model/train_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/moe.h"

namespace whale {

namespace {

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
    ctx.rope.apply(a.q.data() + r * heads * qhd + nope, pos, heads, qhd);
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
    ctx.rope.apply_backward(dq.data() + r * heads * qhd + nope, pos, heads, qhd);
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

}  // namespace

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

namespace {


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

}  // namespace


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

}  // namespace whale
