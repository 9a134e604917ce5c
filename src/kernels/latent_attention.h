// Absorbed MLA attention over the cached latents (DeepSeek-V2 paper, section 2.1, with W_UK and
// W_UV absorbed), for spans of a few rows: decode steps and short prompt chunks.
// For query row r of a span (token i = r / heads, head r % heads):
//   s_p = scale * q_r · C_p            for cached rows p <= pos0 + i (causal),
//   ctx_r = sum_p softmax(s)_p C_p[0:rank]
// where q_r is the absorbed query [W_UK^T q_nope ; q_rope] (width = rank + rope) and C_p the
// cached [c_p ; k_p^R]. One parallel region over (span, token, group of heads) items for all
// spans of a step, so a batch of sequences runs side by side instead of one small SGEMM pair
// each (OpenBLAS on this CPU ran them on its SSE3 kernels, one after the other).
// Each output is the same chain of operations whatever the other spans, the item's group or the
// thread: a sequence's context is bit-identical alone or batched.
#pragma once
#include <cstdint>

namespace whale {

struct LatentSpan {
  const float* q;      // [rows * heads, width] absorbed queries
  const float* cache;  // [>= pos0 + rows, width] cached rows of this sequence and layer
  int64_t rows = 0;    // tokens in the span
  int64_t pos0 = 0;    // cache position of the span's first token
  float* ctx;          // [rows * heads, rank] output
  int64_t capacity = 0;  // rows the cache can hold: sizes the score scratch once, not per length
};

// Optional work for one item (span index, token in it, heads [h0, h0 + nq)), run by the worker
// that owns the item: `before` its scores (e.g. the absorbed queries of those heads), `after` its
// context (e.g. W_UV on it). Lets a decode step's absorption, attention and output product share
// one parallel region. Plain function pointers: nothing is allocated.
struct LatentItemHooks {
  using Fn = void (*)(void* user, int64_t span, int64_t token, int64_t h0, int64_t nq);
  Fn before = nullptr, after = nullptr;
  void* user = nullptr;
};

void latent_attention(const LatentSpan* spans, int64_t n_spans, int64_t heads, int64_t rank, int64_t width,
                      float scale, const LatentItemHooks* hooks = nullptr);

}  // namespace whale
