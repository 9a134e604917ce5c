// latent_attention (absorbed MLA over cached latents) against a float64 scalar reference, and a
// span's context bit-identical alone and in a batch.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/latent_attention.h"

using namespace whale;

namespace {

struct SpanData {
  int64_t rows, pos0;
  std::vector<float> q, cache, ctx;
};

SpanData make_span(int64_t rows, int64_t pos0, int64_t heads, int64_t rank, int64_t width, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  SpanData s{rows, pos0, {}, {}, {}};
  s.q.resize(size_t(rows * heads * width));
  s.cache.resize(size_t((pos0 + rows) * width));
  s.ctx.assign(size_t(rows * heads * rank), -1.0f);
  for (float& v : s.q) v = n(rng);
  for (float& v : s.cache) v = n(rng);
  return s;
}

// Straight from the formula, in double.
std::vector<double> reference(const SpanData& s, int64_t heads, int64_t rank, int64_t width, double scale) {
  std::vector<double> out(size_t(s.rows * heads * rank), 0.0);
  for (int64_t i = 0; i < s.rows; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t r = i * heads + h, visible = s.pos0 + i + 1;
      std::vector<double> score(static_cast<size_t>(visible));
      double mx = -1e300, sum = 0;
      for (int64_t p = 0; p < visible; ++p) {
        double d = 0;
        for (int64_t k = 0; k < width; ++k) d += double(s.q[size_t(r * width + k)]) * s.cache[size_t(p * width + k)];
        score[size_t(p)] = scale * d;
        mx = std::max(mx, score[size_t(p)]);
      }
      for (double& v : score) sum += (v = std::exp(v - mx));
      for (int64_t p = 0; p < visible; ++p)
        for (int64_t c = 0; c < rank; ++c)
          out[size_t(r * rank + c)] += score[size_t(p)] / sum * s.cache[size_t(p * width + c)];
    }
  return out;
}

LatentSpan view(SpanData& s) { return {s.q.data(), s.cache.data(), s.rows, s.pos0, s.ctx.data()}; }

}  // namespace

TEST(LatentAttention, MatchesFloat64Reference) {
  // 6 heads: a group of 4 and one of 2; rank 72 and width 79: column and lane tails.
  for (auto [heads, rank, rope] : {std::tuple<int64_t, int64_t, int64_t>{6, 72, 7}, {16, 256, 32}, {1, 16, 0}}) {
    const int64_t width = rank + rope;
    const float scale = 1.0f / std::sqrt(float(width));
    std::vector<SpanData> spans;
    spans.push_back(make_span(1, 0, heads, rank, width, 1));    // first token: one visible row
    spans.push_back(make_span(1, 37, heads, rank, width, 2));   // decode, odd context
    spans.push_back(make_span(5, 12, heads, rank, width, 3));   // prompt chunk, causal inside
    spans.push_back(make_span(3, 0, heads, rank, width, 4));    // prompt from the start
    std::vector<LatentSpan> views;
    for (auto& s : spans) views.push_back(view(s));
    latent_attention(views.data(), int64_t(views.size()), heads, rank, width, scale);
    for (const auto& s : spans) {
      const auto ref = reference(s, heads, rank, width, scale);
      double worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(ref[i] - s.ctx[i]));
      // Contexts are convex mixtures of N(0,1) entries (|ctx| <= ~4); float sums of <= 300
      // products carry ~1e-5 relative error into the softmax.
      EXPECT_LT(worst, 2e-4) << "heads " << heads << " rank " << rank << " rows " << s.rows << " pos0 " << s.pos0;
    }
  }
}

TEST(LatentAttention, SpanAloneEqualsSpanInABatch) {
  const int64_t heads = 6, rank = 72, width = 79;
  const float scale = 0.1f;
  std::vector<SpanData> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(make_span(i == 2 ? 4 : 1, 10 + 7 * i, heads, rank, width, 10 + uint32_t(i)));
  std::vector<LatentSpan> views;
  for (auto& s : batch) views.push_back(view(s));
  latent_attention(views.data(), int64_t(views.size()), heads, rank, width, scale);
  for (int i = 0; i < 5; ++i) {
    SpanData alone = make_span(batch[size_t(i)].rows, batch[size_t(i)].pos0, heads, rank, width, 10 + uint32_t(i));
    LatentSpan v = view(alone);
    latent_attention(&v, 1, heads, rank, width, scale);
    EXPECT_EQ(alone.ctx, batch[size_t(i)].ctx) << "span " << i;
  }
}
