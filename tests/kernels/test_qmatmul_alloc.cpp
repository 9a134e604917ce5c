// The decode path allocates nothing once warmed up: a replaced global operator new counts
// every C++ heap allocation in this test binary (C-level mallocs of OpenBLAS/libgomp, which
// keep their own pools, are not counted).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "infer/speculative.h"
#include "io/checkpoint.h"
#include "kernels/qmatmul.h"
#include "model/transformer.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
// Every form that pairs with the replaced new or delete goes through malloc/free too, so that a
// sanitizer's own nothrow or array new is never freed here (ASan reports that as a mismatch).
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new[](std::size_t n, const std::nothrow_t& tag) noexcept { return operator new(n, tag); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

using namespace whale;

namespace {

std::unique_ptr<Model> tiny() {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 2;
  init.std = 0.05;
  return init_model(c, init);
}

}  // namespace

TEST(DecodeAllocations, CounterSeesAllocations) {
  const int64_t before = g_allocations.load();
  // Direct calls of the replaceable functions: unlike new-expressions, the compiler may not elide
  // them (at -O1 GCC merged a new'd vector's two allocations into one).
  void* a = ::operator new(16);
  void* b = ::operator new(400);
  ::operator delete(b);
  ::operator delete(a);
  EXPECT_GE(g_allocations.load() - before, 2);
}

TEST(DecodeAllocations, TransformerDecodeStepAllocatesNothing) {
  auto m = tiny();
  const ModelConfig& c = m->config;
  Transformer tf(*m);
  KVCache cache(c, 64);
  std::vector<int32_t> prompt{3, 4, 5, 6, 7, 8, 9, 10};
  std::vector<float> hidden(64 * size_t(c.hidden_size)), logits(size_t(c.vocab_size));
  tf.forward(prompt.data(), {SeqSpan{&cache, 0, 8, 0}}, hidden.data());
  std::vector<SeqSpan> spans{SeqSpan{&cache, 0, 1, 8}};
  const std::vector<int64_t> rows{0};
  int32_t token = 11;
  // One warm-up step sizes the decode scratch (attention's for the cache's whole capacity).
  spans[0].pos0 = cache.length;
  tf.forward(&token, spans, hidden.data());
  tf.logits(hidden.data(), rows, logits.data());
  const int64_t before = g_allocations.load();
  for (int step = 0; step < 20; ++step) {
    spans[0].pos0 = cache.length;
    tf.forward(&token, spans, hidden.data());
    tf.logits(hidden.data(), rows, logits.data());
  }
  EXPECT_EQ(g_allocations.load() - before, 0);
}

TEST(DecodeAllocations, QmatmulAllocatesNothingAfterFirstCall) {
  const int64_t N = 64, K = 256;
  std::vector<uint8_t> w(ggml_row_size(GgmlType::Q4_K, K) * N, 0);
  std::vector<float> x(static_cast<size_t>(K), 0.5f), y(static_cast<size_t>(N));
  qmatmul(GgmlType::Q4_K, w.data(), N, K, x.data(), 1, y.data());
  const int64_t before = g_allocations.load();
  for (int i = 0; i < 10; ++i) qmatmul(GgmlType::Q4_K, w.data(), N, K, x.data(), 1, y.data());
  EXPECT_EQ(g_allocations.load() - before, 0);
}

TEST(DecodeAllocations, SpeculativeDecodeLoopAllocatesNothing) {
  // Between the 6th and the 30th generated token (inside generate's decode loop) nothing is
  // allocated: every buffer was sized at the start or by the first steps.
  auto m = tiny();
  SpeculativeGenerator spec(*m);
  GenerateOptions o;
  o.max_tokens = 40;
  o.stop_at_eos = false;
  o.sampling.temperature = 0.8f;
  o.sampling.top_k = 50;
  int64_t seen = 0, at6 = 0, at30 = 0;
  spec.generate({{5, 6, 7}}, o, [&](int64_t, int32_t) {
    ++seen;
    if (seen == 6) at6 = g_allocations.load();
    if (seen == 30) at30 = g_allocations.load();
    return true;
  });
  EXPECT_EQ(at30 - at6, 0);
}
