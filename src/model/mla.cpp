// Multi-head Latent Attention (DeepSeek-V2 paper, section 2.1): low-rank joint KV compression
// with a decoupled RoPE key shared by all heads.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "core/phase_timer.h"
#include "kernels/latent_attention.h"
#include "kernels/linear_bf16.h"
#include "kernels/ops.h"
#include "kernels/qmatmul.h"
#include "model/transformer.h"

namespace whale {

namespace {
enum Slot { kQa = 8, kLatent, kExpanded, kThreadScratch, kAbsorbedQ = 20, kAbsorbedContext = 22, kKvB = 21 };
constexpr int64_t kAutoNaiveRows = 32;  // spans this long are prefills: expanded K/V is cheaper

// y_r[0:n] = sum_d q_r[d] * w[d, 0:n] for R query rows (w row-major with stride n), 32
// columns at a time held in registers across all d, each loaded w row reused for the R rows.
// Every element is the same chain of multiply-adds over d whatever R is, so a row's result does
// not depend on which rows share its block.
template <int R>
void absorb_rows(const float* const* q, int64_t dims, const float* w, int64_t n, float* const* y) {
  constexpr int64_t kCols = 32;
  int64_t c0 = 0;
  for (; c0 + kCols <= n; c0 += kCols) {
    float acc[R][kCols] = {};
    for (int64_t d = 0; d < dims; ++d) {
      const float* wr = w + d * n + c0;
      for (int r = 0; r < R; ++r) {
        const float qd = q[r][d];
#pragma omp simd
        for (int64_t c = 0; c < kCols; ++c) acc[r][c] += qd * wr[c];
      }
    }
    for (int r = 0; r < R; ++r) std::copy_n(acc[r], kCols, y[r] + c0);
  }
  for (int r = 0; r < R; ++r)
    for (int64_t c = c0; c < n; ++c) {
      float acc = 0.0f;
      for (int64_t d = 0; d < dims; ++d) acc += q[r][d] * w[d * n + c];
      y[r][c] = acc;
    }
}

// Rows [row0, row0 + rows) of kv_b_proj as F32: the constructor's F32 copy when there is one,
// else (a block-quantised GGUF kv_b, kept as mapped: a quarter of the F32 bytes per step)
// dequantised into scratch. The values are the same floats either way, so every sum after
// this is unchanged.
const float* kv_b_rows(const Tensor& kv_b, const std::vector<float>& f32, int64_t row0, int64_t rows,
                       std::vector<float>& scratch) {
  const int64_t n = kv_b.cols();
  if (!f32.empty()) return f32.data() + row0 * n;
  if (kv_b.dtype == DType::F32) return kv_b.f32() + row0 * n;  // used in place (see Transformer::Transformer)
  if (scratch.size() < size_t(rows * n)) scratch.resize(size_t(rows * n));
  GgmlType type;
  ggml_type_of(kv_b.dtype, &type);
  const size_t row_bytes = ggml_row_size(type, n);
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(type, static_cast<const uint8_t*>(kv_b.data) + size_t(row0 + r) * row_bytes, scratch.data() + r * n, n);
  return scratch.data();
}

// Quantised absorption, per head: W_UK and W_UV as quantised products on k_b / v_b. Run per span
// in their own parallel regions, or fused into latent_attention's items (decode steps of a row or
// two: before/after), where each item's worker makes the absorbed queries of its heads before
// their scores and applies W_UV to their context after, so the step's W_UK, attention and W_UV
// share one parallel region instead of three. A row's result does not depend on how many rows
// one call takes, so both give the same bits.
struct QuantisedAbsorption {
  GgmlType kb_type, vb_type;
  const uint8_t *k_b, *v_b;  // [heads][rank rows of nope] and [heads][vd rows of rank], quantised
  size_t kb_head, vb_head;   // bytes per head
  bool kb_x16, vb_x16;       // in repack_q8_0_x16's layout (each head's rows whole tiles)
  int64_t heads, qhd, nope, rope, rank, width, vd;
  const float* q;       // [T, heads, qhd] queries (rotated)
  float* qcat;          // [T, heads, width] absorbed queries
  const float* ctx;     // [T, heads, rank]
  float* out;           // [T, heads, vd]
  const int64_t* row_begin;  // per latent span: its first row in the batch (fused hooks only)
  KernelPath path;

  // Head h's absorbed queries for rows t0 .. t0 + rows: W_UK^T q_nope, then the rope part copied.
  void absorb_queries(int64_t h, int64_t t0, int64_t rows) const {
    product(kb_x16, kb_type, k_b + size_t(h) * kb_head, rank, nope, q + (t0 * heads + h) * qhd, heads * qhd, rows,
            qcat + (t0 * heads + h) * width, heads * width);
    for (int64_t t = t0; t < t0 + rows; ++t)
      std::copy_n(q + (t * heads + h) * qhd + nope, rope, qcat + (t * heads + h) * width + rank);
  }
  // Head h's output for rows t0 .. t0 + rows: W_UV ctx.
  void apply_uv(int64_t h, int64_t t0, int64_t rows) const {
    product(vb_x16, vb_type, v_b + size_t(h) * vb_head, vd, rank, ctx + (t0 * heads + h) * rank, heads * rank, rows,
            out + (t0 * heads + h) * vd, heads * vd);
  }
  // y[rows, N] = x[rows, K] (rows ldx apart) W^T on this thread, W as rows or repacked.
  void product(bool x16, GgmlType t, const uint8_t* W, int64_t N, int64_t K, const float* x, int64_t ldx, int64_t rows,
               float* y, int64_t ldy) const {
    if (x16) return qmatmul_rows_x16(W, N, K, x, ldx, rows, y, ldy, false);
    qmatmul_rows(t, W, N, K, x, ldx, rows, y, ldy, false, path);
  }
  static void before(void* user, int64_t span, int64_t token, int64_t h0, int64_t nq) {
    const QuantisedAbsorption& a = *static_cast<const QuantisedAbsorption*>(user);
    for (int64_t h = h0; h < h0 + nq; ++h) a.absorb_queries(h, a.row_begin[span] + token, 1);
  }
  static void after(void* user, int64_t span, int64_t token, int64_t h0, int64_t nq) {
    const QuantisedAbsorption& a = *static_cast<const QuantisedAbsorption*>(user);
    for (int64_t h = h0; h < h0 + nq; ++h) a.apply_uv(h, a.row_begin[span] + token, 1);
  }
};

}  // namespace

void Transformer::attention(const LayerWeights& w, int64_t layer, const float* xn, int64_t T,
                            const std::vector<SeqSpan>& spans, bool mtp, float* out) {
  (void)mtp;
  const ModelConfig& c = config_;
  const int64_t heads = c.num_attention_heads, qhd = c.qk_head_dim(), nope = c.qk_nope_head_dim;
  const int64_t rank = c.kv_lora_rank, rope = c.qk_rope_head_dim;
  const float eps = float(c.rms_norm_eps);
  if (q_scratch_.size() < size_t(T * heads * qhd)) q_scratch_.resize(size_t(T * heads * qhd));
  if (kv_scratch_.size() < size_t(T * (rank + rope))) kv_scratch_.resize(size_t(T * (rank + rope)));
  float* q = q_scratch_.data();
  float* kva = kv_scratch_.data();
  // The two projections of xn (q_proj or q_a_proj, and kv_a_proj_with_mqa): for a decode step
  // with both quantised, one qmatvec_batch (one parallel region, the same bits as two qmatmuls).
  const Tensor& q_in = c.q_lora_rank > 0 ? w.attn.q_a_proj : w.attn.q_proj;
  float* q_in_out = c.q_lora_rank > 0 ? buffer(kQa, size_t(T * c.q_lora_rank)).data() : q;
  std::optional<phases::Scope> scope;
  scope.emplace(phases::kAttnProj, phase_bytes({&q_in, &w.attn.kv_a_proj_with_mqa, &w.attn.q_b_proj}));
  QMatvec xn_jobs[2];
  bool x16[2];
  if (T <= 2 && quantised_form(q_in, &xn_jobs[0].type, &xn_jobs[0].W, &x16[0]) &&
      quantised_form(w.attn.kv_a_proj_with_mqa, &xn_jobs[1].type, &xn_jobs[1].W, &x16[1])) {
    xn_jobs[0] = {xn_jobs[0].type, xn_jobs[0].W, q_in.rows(), q_in.cols(), xn, q_in_out, false, T, x16[0]};
    const Tensor& kv_a = w.attn.kv_a_proj_with_mqa;
    xn_jobs[1] = {xn_jobs[1].type, xn_jobs[1].W, kv_a.rows(), kv_a.cols(), xn, kva, false, T, x16[1]};
    qmatvec_batch(xn_jobs, 2);
  } else {
    project(xn, T, q_in, q_in_out);
    project(xn, T, w.attn.kv_a_proj_with_mqa, kva);
  }
  if (c.q_lora_rank > 0) {
    rmsnorm(q_in_out, w.attn.q_a_layernorm.f32(), q_in_out, T, c.q_lora_rank, eps);
    project(q_in_out, T, w.attn.q_b_proj, q);
  }
  scope.emplace(phases::kAttnCore, phase_bytes({&w.attn.k_b, &w.attn.v_b}));
  // Cache the normalised latent c_t and the rotated shared key k_t^R (equations 9-10 of V2).
  for (const SeqSpan& s : spans) {
    for (int64_t i = 0; i < s.rows; ++i) {
      const int64_t t = s.row_begin + i, pos = s.pos0 + i;
      float* row = s.cache->row(layer, pos);
      rmsnorm(kva + t * (rank + rope), w.attn.kv_a_layernorm.f32(), row, 1, rank, eps);
      std::memcpy(row + rank, kva + t * (rank + rope) + rank, size_t(rope) * sizeof(float));
      rope_.apply(row + rank, pos);
      rope_.apply(q + t * heads * qhd + nope, pos, heads, qhd);
    }
  }
  auto absorbed = [&](const SeqSpan& s) {
    return mode_ == AttentionMode::Absorbed || (mode_ == AttentionMode::Auto && s.rows < kAutoNaiveRows);
  };
  // Absorbed spans share the two products with kv_b_proj (W_UK before the scores, W_UV after
  // the context): computed here for all their rows at once, heads outermost, so each head's
  // [nope + vd, rank] slice is read once per step instead of once per sequence (2 MB per layer
  // for the bench model; batch 16 read it 16 times). Each row's sums keep their order.
  const int64_t width = rank + rope, vd = c.v_head_dim;
  // kv_b_proj: [heads * (nope + vd), rank], read per head through kv_b_rows.
  const std::vector<float>& kv_b_f32 = kv_b_f32_[size_t(layer)];
  std::vector<float>& qcat = buffer(kAbsorbedQ, size_t(T * heads * width));
  std::vector<float>& ctx = buffer(kAbsorbedContext, size_t(T * heads * rank));
  bool any_absorbed = false;
  for (const SeqSpan& s : spans) any_absorbed = any_absorbed || absorbed(s);
  // Quantised absorption (set_quantised_absorption): k_b head h is [rank rows, nope values],
  // so (W_UK^T q_nope)_j = k_b row j · q_nope, a [rank x nope] quantised matvec per head; v_b
  // head h is [vd rows, rank values], so W_UV ctx is a [vd x rank] one. No dequantised copy.
  GgmlType kb_type = GgmlType::F32, vb_type = GgmlType::F32;
  const bool int8_uk = quantised_absorption_ && !w.attn.k_b.empty() && ggml_type_of(w.attn.k_b.dtype, &kb_type) &&
                       qmatmul_supported(kb_type) && nope % ggml_block_size(kb_type) == 0;
  const bool int8_uv = quantised_absorption_ && !w.attn.v_b.empty() && ggml_type_of(w.attn.v_b.dtype, &vb_type) &&
                       qmatmul_supported(vb_type) && rank % ggml_block_size(vb_type) == 0;
  const KernelPath path = kernel_path();
  const Tensor& kv_b_proj = w.attn.kv_b_proj;
  const bool bf16_uv = kv_b_proj.dtype == DType::BF16 && bf16_path() != Bf16Path::Widen;
  int64_t absorbed_rows = 0;
  for (const SeqSpan& s : spans) absorbed_rows += absorbed(s) ? s.rows : 0;
  // Fused into the attention's items only for a row or two (decode, an MTP verify pass): each
  // item reads its heads' k_b/v_b again, which a wider batch would repeat once per row.
  const bool fuse = fuse_absorption_ && int8_uk && int8_uv && !bf16_uv && absorbed_rows > 0 && absorbed_rows <= 2;
  // Per-head quantised W_UK / W_UV: inside latent_attention's items when fused, else below.
  // Their repacked copies when the model has them (same bytes per head: whole tiles).
  const void *kb_data = w.attn.k_b.data, *vb_data = w.attn.v_b.data;
  bool kb_x16 = false, vb_x16 = false;
  GgmlType repacked_type;
  if (int8_uk) quantised_form(w.attn.k_b, &repacked_type, &kb_data, &kb_x16);
  if (int8_uv) quantised_form(w.attn.v_b, &repacked_type, &vb_data, &vb_x16);
  QuantisedAbsorption quantised{kb_type, vb_type, static_cast<const uint8_t*>(kb_data),
                                static_cast<const uint8_t*>(vb_data),
                                int8_uk ? size_t(rank) * ggml_row_size(kb_type, nope) : 0,
                                int8_uv ? size_t(vd) * ggml_row_size(vb_type, rank) : 0, kb_x16, vb_x16, heads, qhd, nope,
                                rope, rank, width, vd, q, qcat.data(), ctx.data(), out, nullptr, path};
  if (fuse) {
    // W_UK and W_UV run inside latent_attention's items below.
  } else if (any_absorbed && int8_uk) {
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < heads; ++h)
      for (const SeqSpan& s : spans)
        if (absorbed(s)) quantised.absorb_queries(h, s.row_begin, s.rows);
  } else if (any_absorbed) {
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < heads; ++h) {
      thread_local std::vector<float> head_rows, k_b_rows;  // each worker's own; grow only
      const float* w_uk;
      if (!w.attn.k_b.empty()) {
        // GGUF split layout kept quantised: k_b holds W_UK^T ([rank, nope] per head). Its rows
        // dequantised and transposed give the same [nope, rank] floats as kv_b_proj's rows.
        const float* kt = kv_b_rows(w.attn.k_b, {}, h * rank, rank, k_b_rows);
        if (head_rows.size() < size_t(nope * rank)) head_rows.resize(size_t(nope * rank));
        constexpr int64_t kTile = 32;  // 32 x 32 tiles: a plain transpose strides 2 KB per write (25% of decode)
        for (int64_t j0 = 0; j0 < rank; j0 += kTile)
          for (int64_t i0 = 0; i0 < nope; i0 += kTile)
            for (int64_t i = i0; i < std::min(nope, i0 + kTile); ++i)
              for (int64_t j = j0; j < std::min(rank, j0 + kTile); ++j) head_rows[size_t(i * rank + j)] = kt[j * nope + i];
        w_uk = head_rows.data();
      } else {
        w_uk = kv_b_rows(w.attn.kv_b_proj, kv_b_f32, h * (nope + vd), nope, head_rows);
      }
      // The absorbed rows in blocks of up to 4 (a batch-16 decode step: 4 blocks per head).
      const float* qn[4];
      float* qabs[4];
      int nb = 0;
      auto flush = [&] {
        if (nb == 4) absorb_rows<4>(qn, nope, w_uk, rank, qabs);
        else if (nb == 3) absorb_rows<3>(qn, nope, w_uk, rank, qabs);
        else if (nb == 2) absorb_rows<2>(qn, nope, w_uk, rank, qabs);
        else if (nb == 1) absorb_rows<1>(qn, nope, w_uk, rank, qabs);
        nb = 0;
      };
      for (const SeqSpan& s : spans) {
        if (!absorbed(s)) continue;
        for (int64_t t = s.row_begin; t < s.row_begin + s.rows; ++t) {
          qn[nb] = q + (t * heads + h) * qhd;
          qabs[nb] = qcat.data() + (t * heads + h) * width;
          std::copy_n(qn[nb] + nope, rope, qabs[nb] + rank);
          if (++nb == 4) flush();
        }
      }
      flush();
    }
  }
  // Absorbed spans: scores, softmax and context over the cached latents for all of them in one
  // parallel region (kernels/latent_attention.h); the rest (prefills) expand K and V.
  thread_local std::vector<LatentSpan> latent_spans;  // grows only
  thread_local std::vector<int64_t> latent_rows;      // each latent span's first batch row; grows only
  latent_spans.clear();
  latent_rows.clear();
  for (const SeqSpan& s : spans) {
    if (!absorbed(s)) {
      attend_span(layer, s, s.pos0, out);
      continue;
    }
    latent_spans.push_back({qcat.data() + s.row_begin * heads * width, s.cache->row(layer, 0), s.rows, s.pos0,
                            ctx.data() + s.row_begin * heads * rank, s.cache->capacity()});
    latent_rows.push_back(s.row_begin);
  }
  quantised.row_begin = latent_rows.data();
  const LatentItemHooks hooks{&QuantisedAbsorption::before, &QuantisedAbsorption::after, &quantised};
  latent_attention(latent_spans.data(), int64_t(latent_spans.size()), heads, rank, width, softmax_scale_,
                   fuse ? &hooks : nullptr);
  // With BF16 weights on a rounding BF16 path, out = W_UV ctx runs through the BF16 kernel on
  // kv_b_proj's own rows (ctx rounded to BF16 like any projection's input), per head over the
  // absorbed rows of all spans gathered: row-invariant like every BF16 projection.
  if (fuse) {
    // done in the items
  } else if (any_absorbed && bf16_uv) {
    int64_t n_abs = 0;
    for (const SeqSpan& s : spans) n_abs += absorbed(s) ? s.rows : 0;
    const uint16_t* kv_b16 = static_cast<const uint16_t*>(kv_b_proj.data);
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < heads; ++h) {
      thread_local std::vector<float> gathered, result;  // each worker's own; grow only
      thread_local Bf16Activations act;
      if (gathered.size() < size_t(n_abs * rank)) gathered.resize(size_t(n_abs * rank));
      if (result.size() < size_t(n_abs * vd)) result.resize(size_t(n_abs * vd));
      int64_t i = 0;
      for (const SeqSpan& s : spans)
        if (absorbed(s))
          for (int64_t t = s.row_begin; t < s.row_begin + s.rows; ++t, ++i)
            std::copy_n(ctx.data() + (t * heads + h) * rank, rank, gathered.data() + i * rank);
      act.pack(gathered.data(), n_abs, rank);
      linear_bf16_range(act, kv_b16 + (h * (nope + vd) + nope) * rank, 0, vd, result.data(), vd, false);
      i = 0;
      for (const SeqSpan& s : spans)
        if (absorbed(s))
          for (int64_t t = s.row_begin; t < s.row_begin + s.rows; ++t, ++i)
            std::copy_n(result.data() + i * vd, vd, out + (t * heads + h) * vd);
    }
  } else if (any_absorbed && int8_uv) {
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < heads; ++h)
      for (const SeqSpan& s : spans)
        if (absorbed(s)) quantised.apply_uv(h, s.row_begin, s.rows);
  } else if (any_absorbed) {
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < heads; ++h) {
      thread_local std::vector<float> head_rows;  // each worker's own; grows only
      const float* w_uv = w.attn.v_b.empty() ? kv_b_rows(kv_b_proj, kv_b_f32, h * (nope + vd) + nope, vd, head_rows)
                                              : kv_b_rows(w.attn.v_b, {}, h * vd, vd, head_rows);
      for (const SeqSpan& s : spans) {
        if (!absorbed(s)) continue;
        for (int64_t t = s.row_begin; t < s.row_begin + s.rows; ++t)
          dot_rows(w_uv, vd, ctx.data() + (t * heads + h) * rank, rank, out + (t * heads + h) * vd);
      }
    }
  }
}

void Transformer::attend_span(int64_t layer, const SeqSpan& s, int64_t pos0, float* out) {
  const ModelConfig& c = config_;
  const int64_t heads = c.num_attention_heads, qhd = c.qk_head_dim(), nope = c.qk_nope_head_dim;
  const int64_t rank = c.kv_lora_rank, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t L = pos0 + s.rows;  // keys visible to the span's last row
  const float scale = softmax_scale_;
  const Tensor& kv_b_proj = (layer < c.num_hidden_layers ? model_.weights.layers[size_t(layer)]
                                                         : model_.weights.mtp[size_t(layer - c.num_hidden_layers)])
                                .attn.kv_b_proj;
  const float* kv_b = kv_b_rows(kv_b_proj, kv_b_f32_[size_t(layer)], 0, heads * (nope + vd), buffer(kKvB, 0));
  const float* q = q_scratch_.data();

  // Naive reference: materialise k_nope and v for every cached position.
  const int threads = omp_get_max_threads();
  const int64_t per_thread = 2 * rank + L;
  std::vector<float>& scratch = buffer(kThreadScratch, size_t(threads * per_thread));
  std::vector<float>& latent = buffer(kLatent, size_t(L * rank));
  for (int64_t p = 0; p < L; ++p) std::memcpy(latent.data() + p * rank, s.cache->row(layer, p), size_t(rank) * 4);
  std::vector<float>& kv = buffer(kExpanded, size_t(L * heads * (nope + vd)));
  Tensor kv_b_view{DType::F32, {heads * (nope + vd), rank}, const_cast<float*>(kv_b)};
  linear(latent.data(), L, kv_b_view, kv.data());
  const int64_t kv_stride = heads * (nope + vd);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < s.rows; ++i) {
    for (int64_t h = 0; h < heads; ++h) {
      float* scores = scratch.data() + omp_get_thread_num() * per_thread;
      const int64_t t = s.row_begin + i, visible = pos0 + i + 1;
      const float* qn = q + (t * heads + h) * qhd;
      const float* qr = qn + nope;
      for (int64_t p = 0; p < visible; ++p) {
        const float* k = kv.data() + p * kv_stride + h * (nope + vd);
        scores[p] = (dot(qn, k, nope) + dot(qr, s.cache->row(layer, p) + rank, rope)) * scale;
      }
      softmax(scores, visible);
      float* o = out + (t * heads + h) * vd;
      std::fill(o, o + vd, 0.0f);
      for (int64_t p = 0; p < visible; ++p) axpy(scores[p], kv.data() + p * kv_stride + h * (nope + vd) + nope, o, vd);
    }
  }
}

}  // namespace whale
