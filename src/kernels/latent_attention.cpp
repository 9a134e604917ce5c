#include "kernels/latent_attention.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/ops.h"

namespace whale {

namespace {
constexpr int kGroup = 4;    // query rows (heads of one token) per item: each cached row is loaded once for them
constexpr int64_t kLanes = 16;
constexpr int64_t kCols = 64;  // context columns held in registers per pass

// s[j * lds + p] = scale * q_j · C_p for NQ query rows and NP cached rows at a time. Every
// (j, p) is 16 lane sums over width in order, then a fixed tree: the same whatever NQ and NP.
template <int NQ, int NP>
void score_block(const float* q, int64_t width, const float* C, int64_t p, float scale, float* s, int64_t lds) {
  float acc[NP][NQ][kLanes] = {};
  int64_t k0 = 0;
  for (; k0 + kLanes <= width; k0 += kLanes)
    for (int b = 0; b < NP; ++b)
      for (int j = 0; j < NQ; ++j) {
        const float* c = C + (p + b) * width + k0;
        const float* qj = q + j * width + k0;
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) acc[b][j][l] += qj[l] * c[l];
      }
  for (int b = 0; b < NP; ++b)
    for (int j = 0; j < NQ; ++j) {
      float* a = acc[b][j];
      for (int64_t k = k0; k < width; ++k) a[k - k0] += q[j * width + k] * C[(p + b) * width + k];
      for (int64_t half = kLanes / 2; half >= 1; half /= 2)
        for (int64_t l = 0; l < half; ++l) a[l] += a[l + half];
      s[j * lds + p + b] = scale * a[0];
    }
}

template <int NQ>
void group(const float* q, const float* C, int64_t visible, int64_t rank, int64_t width, float scale, float* s,
           int64_t lds, float* ctx) {
  int64_t p = 0;
  for (; p + 2 <= visible; p += 2) score_block<NQ, 2>(q, width, C, p, scale, s, lds);
  if (p < visible) score_block<NQ, 1>(q, width, C, p, scale, s, lds);
  for (int j = 0; j < NQ; ++j) softmax(s + j * lds, visible);
  // ctx_j[c] = sum_p prob_j[p] C_p[c], p ascending for every element.
  for (int64_t c0 = 0; c0 < rank; c0 += kCols) {
    const int64_t nc = std::min(kCols, rank - c0);
    float acc[NQ][kCols] = {};
    if (nc == kCols) {
      for (int64_t pp = 0; pp < visible; ++pp) {
        const float* c = C + pp * width + c0;
        for (int j = 0; j < NQ; ++j) {
          const float pr = s[j * lds + pp];
#pragma omp simd
          for (int64_t l = 0; l < kCols; ++l) acc[j][l] += pr * c[l];
        }
      }
    } else {
      for (int64_t pp = 0; pp < visible; ++pp)
        for (int j = 0; j < NQ; ++j)
          for (int64_t l = 0; l < nc; ++l) acc[j][l] += s[j * lds + pp] * C[pp * width + c0 + l];
    }
    for (int j = 0; j < NQ; ++j) std::copy_n(acc[j], nc, ctx + j * rank + c0);
  }
}
}  // namespace

void latent_attention(const LatentSpan* spans, int64_t n_spans, int64_t heads, int64_t rank, int64_t width,
                      float scale, const LatentItemHooks* hooks) {
  const int64_t groups = (heads + kGroup - 1) / kGroup;
  int64_t items = 0, longest = 0, room = 0;
  for (int64_t i = 0; i < n_spans; ++i) {
    items += spans[i].rows * groups;
    longest = std::max(longest, spans[i].pos0 + spans[i].rows);
    room = std::max(room, std::max(spans[i].capacity, spans[i].pos0 + spans[i].rows));
  }
  if (items == 0) return;
  // Item -> (span, token, group) by a walk over the spans: a few dozen spans at most.
#pragma omp parallel for schedule(dynamic, 1) if (items > 1)
  for (int64_t it = 0; it < items; ++it) {
    // Each worker's own; grows only, to the caches' capacity at once, so a decode loop whose
    // sequences lengthen step by step allocates nothing after its first step.
    thread_local std::vector<float> scores;
    if (scores.size() < size_t(kGroup * room)) scores.resize(size_t(kGroup * room));
    int64_t rest = it, si = 0;
    while (rest >= spans[si].rows * groups) rest -= spans[si++].rows * groups;
    const LatentSpan& sp = spans[si];
    const int64_t token = rest / groups, h0 = (rest % groups) * kGroup;
    const int64_t nq = std::min<int64_t>(kGroup, heads - h0), visible = sp.pos0 + token + 1;
    const int64_t r = token * heads + h0;
    const float* q = sp.q + r * width;
    float* ctx = sp.ctx + r * rank;
    float* s = scores.data();
    if (hooks && hooks->before) hooks->before(hooks->user, si, token, h0, nq);
    switch (nq) {
      case 4: group<4>(q, sp.cache, visible, rank, width, scale, s, longest, ctx); break;
      case 3: group<3>(q, sp.cache, visible, rank, width, scale, s, longest, ctx); break;
      case 2: group<2>(q, sp.cache, visible, rank, width, scale, s, longest, ctx); break;
      default: group<1>(q, sp.cache, visible, rank, width, scale, s, longest, ctx); break;
    }
    if (hooks && hooks->after) hooks->after(hooks->user, si, token, h0, nq);
  }
}

}  // namespace whale
