#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <vector>

#include "core/phase_timer.h"
#include "kernels/linear_bf16.h"
#include "kernels/ops.h"
#include "kernels/qmatmul.h"
#include "model/transformer.h"

namespace whale {

namespace {
enum Slot { kRouterLogits = 12, kGather, kGate, kUp, kDown, kSharedGate, kSharedUp, kGateWeights, kSharedDown = 23 };

// Indices of the k largest values, largest first; ties go to the lower index (as torch.topk
// does on CPU in practice).
void top_k(const float* v, int64_t n, int64_t k, int32_t* out) {
  thread_local std::vector<int32_t> idx;  // grown once: routing runs on the decode path
  idx.resize(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  });
  std::copy(idx.begin(), idx.begin() + k, out);
}

bool all_bf16(const ModelConfig& c, const MoeWeights& m) {
  auto bf16 = [](const MlpWeights& e) {
    return e.gate_proj.dtype == DType::BF16 && e.up_proj.dtype == DType::BF16 && e.down_proj.dtype == DType::BF16;
  };
  for (const MlpWeights& e : m.experts)
    if (!bf16(e)) return false;
  return c.n_shared_experts == 0 || bf16(m.shared);
}

struct FusedBuffers {
  std::vector<float>*in, *gate, *up, *down, *shared_gate, *shared_up, *shared_down;
};

// The routed experts (and the shared one) of a BF16 MoE layer in two parallel regions, instead
// of one per projection of each chosen expert: at batch 16 a decode step picks ~50 experts per
// layer, and ~150 small parallel regions (each a fork/join of the team) cost as much as reading
// the weights. Work items are (expert, projection, block of weight rows), scheduled dynamically.
// Each output is computed by the same kernel over the same BF16-rounded rows as
// linear_bf16(), and added to x in the same order (experts in index order, then the shared
// expert), so the result is bit-identical to the per-expert loop below.
void experts_fused(const ModelConfig& c, const MoeWeights& m, const int64_t* offsets, const int64_t* pairs,
                   const float* gate_w, const float* xn, int64_t T, float* x, FusedBuffers b) {
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok, H = c.hidden_size;
  const int64_t I = c.moe_intermediate_size, A = T * K;  // A assignments (token, expert)
  const bool shared = c.n_shared_experts > 0;
  const int64_t Is = shared ? m.shared.gate_proj.rows() : 0;
  // Per-expert activations, packed once per layer, and the work lists: grown once. thread_local
  // (one set per calling thread); the parallel regions use these references, not the names.
  thread_local std::vector<Bf16Activations> act_in_scratch, act_mid_scratch;
  thread_local std::vector<int32_t> active_scratch;  // experts with tokens, then E for the shared one
  thread_local std::vector<int64_t> items_scratch;
  std::vector<Bf16Activations>& act_in = act_in_scratch;
  std::vector<Bf16Activations>& act_mid = act_mid_scratch;
  std::vector<int32_t>& active = active_scratch;
  std::vector<int64_t>& items = items_scratch;
  act_in.resize(size_t(E + 1));
  act_mid.resize(size_t(E + 1));
  if (b.in->size() < size_t(A * H)) b.in->resize(size_t(A * H));
  if (b.gate->size() < size_t(A * I)) b.gate->resize(size_t(A * I)), b.up->resize(size_t(A * I));
  if (b.down->size() < size_t(A * H)) b.down->resize(size_t(A * H));
  if (shared && b.shared_gate->size() < size_t(T * Is)) b.shared_gate->resize(size_t(T * Is)), b.shared_up->resize(size_t(T * Is));
  if (shared && b.shared_down->size() < size_t(T * H)) b.shared_down->resize(size_t(T * H));
  float* in = b.in->data();
  float* g = b.gate->data();
  float* u = b.up->data();
  float* d = b.down->data();
  active.clear();
  for (int64_t e = 0; e < E; ++e)
    if (offsets[e + 1] > offsets[e]) active.push_back(int32_t(e));
  if (shared) active.push_back(int32_t(E));
  const int64_t n_active = int64_t(active.size());
  // Gathering and packing each expert's rows is its own work (at batch 16, ~47 experts): in
  // parallel, like the products (serial, it was ~4% of a batch-16 step).
#pragma omp parallel for schedule(dynamic, 1) if (T > 1)
  for (int64_t a = 0; a < n_active; ++a) {
    const int32_t e = active[size_t(a)];
    if (e == E) {
      act_in[size_t(E)].pack(xn, T, H);
      continue;
    }
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i) std::copy_n(xn + (pairs[i] / K) * H, H, in + i * H);
    act_in[size_t(e)].pack(in + offsets[e] * H, offsets[e + 1] - offsets[e], H);
  }
  const int64_t rows = linear_bf16_block_rows();
  const int64_t up_block = std::max<int64_t>(rows, 64 / rows * rows), down_block = std::max<int64_t>(rows, 128 / rows * rows);
  auto expert = [&](int32_t e) -> const MlpWeights& { return e == E ? m.shared : m.experts[size_t(e)]; };
  auto bf16 = [](const Tensor& t) { return static_cast<const uint16_t*>(t.data); };
  // Items: for each active expert, gate and up over blocks of up_block weight rows.
  items.clear();
  for (size_t a = 0; a < active.size(); ++a) {
    const int64_t n = active[a] == E ? Is : I;
    for (int64_t proj = 0; proj < 2; ++proj)
      for (int64_t r = 0; r < n; r += up_block) items.push_back((int64_t(a) << 32) | (proj << 31) | r);
  }
  const int64_t n_up = int64_t(items.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t it = 0; it < n_up; ++it) {
    const int32_t e = active[size_t(items[size_t(it)] >> 32)];
    const bool up_proj = (items[size_t(it)] >> 31) & 1;
    const int64_t r0 = items[size_t(it)] & 0x7fffffff, n = e == E ? Is : I;
    const MlpWeights& ex = expert(e);
    float* out = e == E ? (up_proj ? b.shared_up->data() : b.shared_gate->data())
                        : (up_proj ? u : g) + offsets[e] * I;
    linear_bf16_range(act_in[size_t(e)], bf16(up_proj ? ex.up_proj : ex.gate_proj), r0, std::min(n, r0 + up_block), out,
                      n, false);
  }
#pragma omp parallel for schedule(dynamic, 1) if (T > 1)
  for (int64_t a = 0; a < n_active; ++a) {
    const int32_t e = active[size_t(a)];
    if (e == E) {
      silu_mul(b.shared_gate->data(), b.shared_up->data(), b.shared_gate->data(), T * Is);
      act_mid[size_t(E)].pack(b.shared_gate->data(), T, Is);
    } else {
      const int64_t rows = offsets[e + 1] - offsets[e];
      silu_mul(g + offsets[e] * I, u + offsets[e] * I, g + offsets[e] * I, rows * I);
      act_mid[size_t(e)].pack(g + offsets[e] * I, rows, I);
    }
  }
  items.clear();
  for (size_t a = 0; a < active.size(); ++a)
    for (int64_t r = 0; r < H; r += down_block) items.push_back((int64_t(a) << 32) | r);
  const int64_t n_down = int64_t(items.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t it = 0; it < n_down; ++it) {
    const int32_t e = active[size_t(items[size_t(it)] >> 32)];
    const int64_t r0 = items[size_t(it)] & 0xffffffff;
    float* out = e == E ? b.shared_down->data() : d + offsets[e] * H;
    linear_bf16_range(act_mid[size_t(e)], bf16(expert(e).down_proj), r0, std::min(H, r0 + down_block), out, H, false);
  }
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i) axpy(gate_w[size_t(pairs[i])], d + i * H, x + (pairs[i] / K) * H, H);
  if (shared) {
    const float* sd = b.shared_down->data();
    for (int64_t i = 0; i < T * H; ++i) x[i] = x[i] + sd[i];
  }
}
}  // namespace

void route_tokens(const ModelConfig& c, const float* logits, const float* bias, int64_t T, int32_t* experts,
                  float* weights) {
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  const int64_t G = c.n_group, group_size = E / G;
  // Per-thread scratch that only grows, so decode steps allocate nothing here.
  thread_local std::vector<float> scores, choice, group_score;
  thread_local std::vector<int32_t> groups;
  thread_local std::vector<char> keep;
  scores.resize(size_t(E));
  choice.resize(size_t(E));
  group_score.resize(size_t(G));
  groups.resize(size_t(G));
  keep.resize(size_t(G));
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits + t * E;
    if (c.scoring_func == ScoringFunc::Sigmoid) {
      for (int64_t e = 0; e < E; ++e) scores[size_t(e)] = 1.0f / (1.0f + std::exp(-l[e]));
    } else {
      std::copy(l, l + E, scores.begin());
      softmax(scores.data(), E);
    }
    for (int64_t e = 0; e < E; ++e)
      choice[size_t(e)] = scores[size_t(e)] + (c.topk_method == TopkMethod::NoauxTc && bias ? bias[e] : 0.0f);
    if (c.topk_method != TopkMethod::Greedy && G > 1) {
      for (int64_t g = 0; g < G; ++g) {
        const float* s = choice.data() + g * group_size;
        if (c.topk_method == TopkMethod::NoauxTc) {
          int32_t best[2];
          top_k(s, group_size, 2, best);  // V3 scores a group by its two best experts
          group_score[size_t(g)] = s[best[0]] + s[best[1]];
        } else {
          group_score[size_t(g)] = *std::max_element(s, s + group_size);
        }
      }
      top_k(group_score.data(), G, c.topk_group, groups.data());
      std::fill(keep.begin(), keep.end(), 0);
      for (int64_t i = 0; i < c.topk_group; ++i) keep[size_t(groups[size_t(i)])] = 1;
      for (int64_t e = 0; e < E; ++e)
        if (!keep[size_t(e / group_size)]) choice[size_t(e)] = -INFINITY;
    }
    int32_t* idx = experts + t * K;
    float* w = weights + t * K;
    top_k(choice.data(), E, K, idx);
    double sum = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      w[k] = scores[size_t(idx[k])];
      sum += w[k];
    }
    for (int64_t k = 0; k < K; ++k) {
      if (K > 1 && c.norm_topk_prob) w[k] = float(w[k] / (sum + 1e-20));
      w[k] = float(w[k] * c.routed_scaling_factor);
    }
  }
}

void Transformer::moe(const LayerWeights& w, int64_t layer, const float* xn, int64_t T, float* x) {
  const ModelConfig& c = config_;
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok, H = c.hidden_size;
  const int64_t I = c.moe_intermediate_size;
  std::optional<phases::Scope> scope;
  scope.emplace(phases::kRouter, phase_bytes({&w.moe.gate}));
  std::vector<float>& logits = buffer(kRouterLogits, size_t(T * E));
  // An F32 router row-invariantly: a verify pass's rows must route as the decode steps they
  // replace (speculative decoding's greedy output is identical only then).
  if (w.moe.gate.dtype == DType::F32 && !w.moe.gate.empty())
    linear_rows_f32(xn, T, w.moe.gate.f32(), E, H, logits.data());
  else
    project(xn, T, w.moe.gate, logits.data());
  std::vector<float>& gate_w = buffer(kGateWeights, size_t(T * K));
  if (moe_chosen_.size() < size_t(T * K)) moe_chosen_.resize(size_t(T * K));
  route_tokens(c, logits.data(), w.moe.e_score_correction_bias.empty() ? nullptr : w.moe.e_score_correction_bias.f32(),
               T, moe_chosen_.data(), gate_w.data());
  // Group the (token, weight) pairs by expert with a counting sort into flat arrays (no
  // per-expert vectors), then run each chosen expert once over its tokens.
  moe_offsets_.assign(size_t(E + 1), 0);
  for (int64_t i = 0; i < T * K; ++i) ++moe_offsets_[size_t(moe_chosen_[size_t(i)]) + 1];
  for (int64_t e = 0; e < E; ++e) moe_offsets_[size_t(e + 1)] += moe_offsets_[size_t(e)];
  if (moe_rows_.size() < size_t(T * K)) moe_rows_.resize(size_t(T * K));
  moe_fill_.assign(moe_offsets_.begin(), moe_offsets_.end() - 1);
  for (int64_t i = 0; i < T * K; ++i) moe_rows_[size_t(moe_fill_[size_t(moe_chosen_[size_t(i)])]++)] = i;
  RouterStats& stats = router_stats_[size_t(layer)];
  scope.reset();
  if (bf16_path() != Bf16Path::Widen && quantised_.empty() && all_bf16(c, w.moe)) {
    for (int64_t e = 0; e < E; ++e) stats.expert_tokens[size_t(e)] += moe_offsets_[size_t(e + 1)] - moe_offsets_[size_t(e)];
    experts_fused(c, w.moe, moe_offsets_.data(), moe_rows_.data(), gate_w.data(), xn, T, x,
                  {&buffer(kGather, 0), &buffer(kGate, 0), &buffer(kUp, 0), &buffer(kDown, 0), &buffer(kSharedGate, 0),
                   &buffer(kSharedUp, 0), &buffer(kSharedDown, 0)});
    return;
  }
  // Quantised experts, any number of rows (decode, verify, prefill): the fused path.
  if (fused_moe_ && moe_fused_quantised(w, xn, T, gate_w.data(), x)) {
    for (int64_t e = 0; e < E; ++e) stats.expert_tokens[size_t(e)] += moe_offsets_[size_t(e + 1)] - moe_offsets_[size_t(e)];
    return;
  }
  std::vector<float>& in = buffer(kGather, size_t(T * H));
  std::vector<float>& g = buffer(kGate, size_t(T * I));
  std::vector<float>& u = buffer(kUp, size_t(T * I));
  std::vector<float>& d = buffer(kDown, size_t(T * H));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = moe_offsets_[size_t(e)], n = moe_offsets_[size_t(e + 1)] - begin;
    stats.expert_tokens[size_t(e)] += n;
    if (n == 0) continue;
    const int64_t* pairs = moe_rows_.data() + begin;  // index t * K + k of each assignment
    // One token (every decode step): read its normalised row in place instead of gathering.
    const float* expert_in = xn + (pairs[0] / K) * H;
    if (n > 1) {
      for (int64_t i = 0; i < n; ++i) std::copy_n(xn + (pairs[i] / K) * H, H, in.data() + i * H);
      expert_in = in.data();
    }
    const MlpWeights& ex = w.moe.experts[size_t(e)];
    project(expert_in, n, ex.gate_proj, g.data());
    project(expert_in, n, ex.up_proj, u.data());
    silu_mul(g.data(), u.data(), g.data(), n * I);
    project(g.data(), n, ex.down_proj, d.data());
    for (int64_t i = 0; i < n; ++i) axpy(gate_w[size_t(pairs[i])], d.data() + i * H, x + (pairs[i] / K) * H, H);
  }
  if (c.n_shared_experts > 0) mlp(w.moe.shared, xn, T, x);
}

// The routed experts and shared expert of a batch through quantised weights (a GGUF's Q8_0
// kept as mapped, or quantize_weights' copies) in two parallel regions, gate and up of every
// chosen expert together, then every down projection, instead of three per expert: at decode a
// V2-Lite layer's seven experts are 21 products of ~3 MB, and each fork/join of the team (on a
// loaded machine, a wait for a descheduled thread) costs as much as a share of the reads. At
// prefill each expert's tokens are one matrix-matrix job (qmatvec_batch weighs its rows by
// their tokens when it splits the work), so each expert's weights are read once per layer.
// Same kernels on the same quantised activations, summed into x in the same order as the
// per-expert loop (experts by index, then the shared one): bit-identical to it. False (nothing
// done) when some expert is not quantised.
bool Transformer::moe_fused_quantised(const LayerWeights& w, const float* xn, int64_t T, const float* gate_w, float* x) {
  const ModelConfig& c = config_;
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok, H = c.hidden_size, I = c.moe_intermediate_size;
  const bool shared = c.n_shared_experts > 0;
  const int64_t Is = shared ? w.moe.shared.gate_proj.rows() : 0;
  auto job = [&](const Tensor& W, const float* in, int64_t M, float* out, QMatvec* j) {
    GgmlType t;
    const void* data;
    bool x16;
    if (!quantised_form(W, &t, &data, &x16)) return false;
    *j = {t, data, W.rows(), W.cols(), in, out, false, M, x16};
    return true;
  };
  const int64_t* offsets = moe_offsets_.data();
  const int64_t* pairs = moe_rows_.data();  // assignment t * K + k, grouped by expert
  QMatvec probe;
  for (int64_t e = 0; e < E; ++e) {
    if (offsets[e + 1] == offsets[e]) continue;
    const MlpWeights& ex = w.moe.experts[size_t(e)];
    for (const Tensor* t : {&ex.gate_proj, &ex.up_proj, &ex.down_proj})
      if (!job(*t, nullptr, 0, nullptr, &probe)) return false;
  }
  if (shared)
    for (const Tensor* t : {&w.moe.shared.gate_proj, &w.moe.shared.up_proj, &w.moe.shared.down_proj})
      if (!job(*t, nullptr, 0, nullptr, &probe)) return false;
  thread_local std::vector<QMatvec> jobs;  // grown once
  jobs.resize(size_t(2 * std::min(E, T * K) + 2));
  const int64_t A = T * K;
  float* in = buffer(kGather, size_t(A * H)).data();
  float* g = buffer(kGate, size_t(A * I)).data();
  float* u = buffer(kUp, size_t(A * I)).data();
  float* d = buffer(kDown, size_t(A * H)).data();
  float* sg = buffer(kSharedGate, size_t(T * Is)).data();
  float* su = buffer(kSharedUp, size_t(T * Is)).data();
  float* sd = buffer(kSharedDown, size_t(T * H)).data();
  int64_t n = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = offsets[e], rows = offsets[e + 1] - begin;
    if (rows == 0) continue;
    // One token: its normalised row in place; more: gathered, as the per-expert loop does.
    const float* expert_in = xn + (pairs[begin] / K) * H;
    if (rows > 1) {
      for (int64_t i = 0; i < rows; ++i) std::copy_n(xn + (pairs[begin + i] / K) * H, H, in + (begin + i) * H);
      expert_in = in + begin * H;
    }
    const MlpWeights& ex = w.moe.experts[size_t(e)];
    job(ex.gate_proj, expert_in, rows, g + begin * I, &jobs[size_t(n++)]);
    job(ex.up_proj, expert_in, rows, u + begin * I, &jobs[size_t(n++)]);
  }
  if (shared) {
    job(w.moe.shared.gate_proj, xn, T, sg, &jobs[size_t(n++)]);
    job(w.moe.shared.up_proj, xn, T, su, &jobs[size_t(n++)]);
  }
  // Weight bytes of the first n jobs, for the phase timer.
  auto jobs_bytes = [&](int64_t n) {
    double bytes = 0;
    for (int64_t j = 0; phases::enabled && j < n; ++j)
      bytes += double(ggml_row_size(jobs[size_t(j)].type, jobs[size_t(j)].K)) * double(jobs[size_t(j)].N);
    return bytes;
  };
  {
    phases::Scope up(phases::kMoeUp, jobs_bytes(n));
    qmatvec_batch(jobs.data(), n);
  }
  silu_mul(g, u, g, A * I);
  if (shared) silu_mul(sg, su, sg, T * Is);
  n = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = offsets[e], rows = offsets[e + 1] - begin;
    if (rows > 0) job(w.moe.experts[size_t(e)].down_proj, g + begin * I, rows, d + begin * H, &jobs[size_t(n++)]);
  }
  if (shared) job(w.moe.shared.down_proj, sg, T, sd, &jobs[size_t(n++)]);
  {
    phases::Scope down(phases::kMoeDown, jobs_bytes(n));
    qmatvec_batch(jobs.data(), n);
  }
  for (int64_t i = 0; i < A; ++i) axpy(gate_w[size_t(pairs[i])], d + i * H, x + (pairs[i] / K) * H, H);
  if (shared)
    for (int64_t i = 0; i < T * H; ++i) x[i] = x[i] + sd[i];
  return true;
}

}  // namespace whale
