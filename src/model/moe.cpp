#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/ops.h"
#include "model/transformer.h"

namespace whale {

namespace {
enum Slot { kRouterLogits = 12, kGather, kGate, kUp, kDown, kSharedGate, kSharedUp, kGateWeights };

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
  std::vector<float>& logits = buffer(kRouterLogits, size_t(T * E));
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

}  // namespace whale
