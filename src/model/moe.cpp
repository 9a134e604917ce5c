#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/ops.h"
#include "model/transformer.h"

namespace whale {

namespace {
enum Slot { kRouterLogits = 12, kGather, kGate, kUp, kDown, kSharedGate, kSharedUp };

// Indices of the k largest values, largest first; ties go to the lower index (as torch.topk
// does on CPU in practice).
void top_k(const float* v, int64_t n, int64_t k, int32_t* out) {
  std::vector<int32_t> idx(static_cast<size_t>(n));
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
  std::vector<float> scores(static_cast<size_t>(E)), choice(static_cast<size_t>(E)), group_score(static_cast<size_t>(G));
  std::vector<int32_t> groups(static_cast<size_t>(G));
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
      std::vector<bool> keep(size_t(G), false);
      for (int64_t i = 0; i < c.topk_group; ++i) keep[size_t(groups[size_t(i)])] = true;
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
  linear(xn, T, w.moe.gate, logits.data());
  std::vector<int32_t> chosen(size_t(T * K));
  std::vector<float> gate_w(size_t(T * K));
  route_tokens(c, logits.data(), w.moe.e_score_correction_bias.empty() ? nullptr : w.moe.e_score_correction_bias.f32(),
               T, chosen.data(), gate_w.data());
  // Group the tokens by expert, then run each expert once over its tokens.
  std::vector<std::vector<std::pair<int64_t, float>>> assigned(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) assigned[size_t(chosen[size_t(t * K + k)])].push_back({t, gate_w[size_t(t * K + k)]});
  RouterStats& stats = router_stats_[size_t(layer)];
  std::vector<float>& in = buffer(kGather, size_t(T * H));
  std::vector<float>& g = buffer(kGate, size_t(T * I));
  std::vector<float>& u = buffer(kUp, size_t(T * I));
  std::vector<float>& d = buffer(kDown, size_t(T * H));
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = assigned[size_t(e)];
    const int64_t n = int64_t(rows.size());
    stats.expert_tokens[size_t(e)] += n;
    if (n == 0) continue;
    for (int64_t i = 0; i < n; ++i) std::copy(xn + rows[size_t(i)].first * H, xn + (rows[size_t(i)].first + 1) * H, in.data() + i * H);
    const MlpWeights& ex = w.moe.experts[size_t(e)];
    linear(in.data(), n, ex.gate_proj, g.data());
    linear(in.data(), n, ex.up_proj, u.data());
    silu_mul(g.data(), u.data(), g.data(), n * I);
    linear(g.data(), n, ex.down_proj, d.data());
    for (int64_t i = 0; i < n; ++i) axpy(rows[size_t(i)].second, d.data() + i * H, x + rows[size_t(i)].first * H, H);
  }
  if (c.n_shared_experts > 0) mlp(w.moe.shared, xn, T, x);
}

}  // namespace whale
