// Continuous batching against the existing Generator (an independent path: one prefill, one
// batch, no pool): greedy tokens must match whether requests arrive together, one after another
// mid-flight, through a KV budget that makes them queue, or with a reused prompt prefix.
// Also the KV pool's accounting, eviction and copy paths by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "core/error.h"
#include "infer/engine.h"
#include "infer/generate.h"
#include "infer/scheduler.h"
#include "io/checkpoint.h"

using namespace whale;

namespace {

const Model& tiny_model() {
  static std::unique_ptr<Model> m = [] {
    InitOptions init;
    init.seed = 7;
    init.std = 0.05;
    init.norm_jitter = 0.1;
    init.router_bias_std = 0.05;
    return init_model(load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json"), init);
  }();
  return *m;
}

std::vector<int32_t> prompt(int64_t n, int32_t salt) {
  std::vector<int32_t> p;
  for (int64_t i = 0; i < n; ++i) p.push_back(int32_t((i * 37 + salt * 11 + 5) % 500) + 2);
  return p;
}

std::vector<int32_t> reference(const std::vector<int32_t>& p, int64_t max_tokens) {
  Generator gen(tiny_model());
  GenerateOptions o;
  o.max_tokens = max_tokens;
  o.stop_at_eos = false;
  return gen.generate({p}, o)[0];
}

std::vector<int32_t> drain(Sequence& s) {
  std::vector<int32_t> out;
  while (!s.wait(out, std::chrono::milliseconds(100))) {
  }
  return out;
}

SequenceRequest request(std::vector<int32_t> p, int64_t max_tokens) {
  SequenceRequest r;
  r.prompt = std::move(p);
  r.max_tokens = max_tokens;
  return r;
}

}  // namespace

TEST(KVPool, BudgetQueuesAndFrees) {
  const ModelConfig& c = tiny_model().config;
  KVPool pool(c, 100, /*prefix_reuse=*/false);
  auto a = pool.acquire(prompt(10, 1), 60);
  ASSERT_TRUE(a);
  EXPECT_FALSE(pool.acquire(prompt(10, 2), 60));  // 120 > 100: must wait
  EXPECT_EQ(pool.stats().active_tokens, 60);
  a->cache->length = 10;
  pool.release(std::move(a->cache), prompt(10, 1));
  EXPECT_EQ(pool.stats().active_tokens, 0);
  EXPECT_EQ(pool.stats().cached_tokens, 0);  // reuse off: nothing kept
  EXPECT_TRUE(pool.acquire(prompt(10, 2), 60));
  EXPECT_FALSE(pool.fits(101));
}

TEST(KVPool, ReusesLongestPrefixAndEvictsOldest) {
  const ModelConfig& c = tiny_model().config;
  KVPool pool(c, 200);
  std::vector<int32_t> a = prompt(20, 1), b = prompt(20, 2);
  for (const auto& p : {a, b}) {
    auto lease = pool.acquire(p, 40);
    ASSERT_TRUE(lease);
    EXPECT_EQ(lease->reused_tokens, 0);
    for (int64_t layer = 0; layer < lease->cache->layers(); ++layer)
      for (int64_t pos = 0; pos < 20; ++pos) lease->cache->row(layer, pos)[0] = float(p[size_t(pos)] + layer);
    lease->cache->length = 20;
    pool.release(std::move(lease->cache), p);
  }
  EXPECT_EQ(pool.stats().cached_prefixes, 2);
  // a follow-up of `a`, needing more room than a's cache: rows are copied into a new cache.
  std::vector<int32_t> follow = a;
  for (int i = 0; i < 10; ++i) follow.push_back(300 + i);
  auto lease = pool.acquire(follow, 100);
  ASSERT_TRUE(lease);
  EXPECT_EQ(lease->reused_tokens, 20);
  EXPECT_EQ(lease->cache->length, 20);
  EXPECT_EQ(lease->cache->capacity(), 100);
  for (int64_t layer = 0; layer < lease->cache->layers(); ++layer)
    EXPECT_EQ(lease->cache->row(layer, 19)[0], float(a[19] + layer));
  EXPECT_EQ(pool.stats().cached_prefixes, 1);  // a's entry moved into the lease
  // The same prompt as a kept one reuses all but its last token.
  auto again = pool.acquire(b, 40);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->reused_tokens, 19);
  EXPECT_EQ(pool.stats().hits, 2);
  EXPECT_EQ(pool.stats().lookups, 4);
  // Full budget: kept prefixes are evicted to admit a new request.
  pool.release(std::move(lease->cache), std::vector<int32_t>(follow.begin(), follow.begin() + 20));
  pool.release(std::move(again->cache), std::vector<int32_t>(b.begin(), b.begin() + 19));
  EXPECT_TRUE(pool.acquire(prompt(5, 9), 200));
  EXPECT_EQ(pool.stats().cached_prefixes, 0);
  EXPECT_EQ(pool.stats().cached_tokens, 0);
}

TEST(Engine, ConcurrentGreedyMatchesGenerator) {
  EngineOptions o;
  o.prefill_chunk = 7;  // several steps per prompt: chunked prefill mixed with decode rows
  Engine engine(tiny_model(), o, {});
  std::vector<std::vector<int32_t>> prompts = {prompt(5, 1), prompt(17, 2), prompt(1, 3), prompt(30, 4)};
  std::vector<std::shared_ptr<Sequence>> seqs;
  for (const auto& p : prompts) seqs.push_back(engine.submit(request(p, 12)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(drain(*seqs[i]), reference(prompts[i], 12)) << "prompt " << i;
    EXPECT_EQ(seqs[i]->finish_reason(), FinishReason::Length);
    EXPECT_EQ(seqs[i]->generated_tokens(), 12);
  }
}

TEST(Engine, LateArrivalJoinsRunningBatch) {
  Engine engine(tiny_model(), {}, {});
  // The first asks for nearly the whole context, so it is still running when the second ends.
  auto first = engine.submit(request(prompt(8, 5), 1000));
  std::vector<int32_t> got;
  while (got.size() < 3) first->wait(got, std::chrono::milliseconds(100));
  auto second = engine.submit(request(prompt(9, 6), 6));
  EXPECT_EQ(drain(*second), reference(prompt(9, 6), 6));
  // The second did not wait for the first to finish: the first is cancelled, not done.
  first->cancel();
  std::vector<int32_t> rest = drain(*first);
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(first->finish_reason(), FinishReason::Cancelled);
  ASSERT_GE(got.size(), 9u);
  std::vector<int32_t> ref = reference(prompt(8, 5), int64_t(got.size()));
  EXPECT_EQ(got, ref);
}

TEST(Engine, SmallBudgetQueuesInsteadOfDropping) {
  EngineOptions o;
  o.kv_budget_tokens = 40;  // one request at a time
  o.prefix_reuse = false;
  Engine engine(tiny_model(), o, {});
  std::vector<std::shared_ptr<Sequence>> seqs;
  for (int i = 0; i < 3; ++i) seqs.push_back(engine.submit(request(prompt(10, 20 + i), 20)));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(drain(*seqs[size_t(i)]), reference(prompt(10, 20 + i), 20));
  EXPECT_THROW(engine.submit(request(prompt(30, 1), 20)), Error);  // can never fit
  EXPECT_THROW(engine.submit(request(prompt(10, 1), 2000)), Error);  // beyond the context
  EXPECT_THROW(engine.submit(request({}, 2)), Error);
  EXPECT_EQ(engine.metrics().rejected, 3);
}

TEST(Engine, PrefixReuseGivesTheSameTokens) {
  Engine engine(tiny_model(), {}, {});
  std::vector<int32_t> turn1 = prompt(24, 8);
  auto a = engine.submit(request(turn1, 10));
  std::vector<int32_t> out1 = drain(*a);
  EXPECT_EQ(a->cached_tokens(), 0);
  // The follow-up turn: previous prompt + answer + new tokens.
  std::vector<int32_t> turn2 = turn1;
  turn2.insert(turn2.end(), out1.begin(), out1.end());
  for (int i = 0; i < 6; ++i) turn2.push_back(400 + i);
  auto b = engine.submit(request(turn2, 10));
  EXPECT_EQ(drain(*b), reference(turn2, 10));
  EXPECT_EQ(b->cached_tokens(), 24 + 9);  // the last sampled token was never fed
  auto m = engine.metrics();
  EXPECT_EQ(m.kv.hits, 1);
  EXPECT_EQ(m.kv.reused_tokens, 33);
}

TEST(Engine, CancelFreesSlotAndCache) {
  EngineOptions o;
  o.prefix_reuse = false;
  Engine engine(tiny_model(), o, {});
  auto s = engine.submit(request(prompt(10, 3), 500));
  std::vector<int32_t> got;
  while (got.empty()) s->wait(got, std::chrono::milliseconds(100));
  s->cancel();
  drain(*s);
  EXPECT_EQ(s->finish_reason(), FinishReason::Cancelled);
  for (int i = 0; i < 100 && engine.metrics().kv.active_tokens != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto m = engine.metrics();
  EXPECT_EQ(m.kv.active_tokens, 0);
  EXPECT_EQ(m.running, 0);
  EXPECT_EQ(m.cancelled, 1);
}

TEST(Engine, StopTokensAndPenalties) {
  std::vector<int32_t> p = prompt(6, 4);
  std::vector<int32_t> ref = reference(p, 8);
  Engine engine(tiny_model(), {}, {ref[3]});  // the 4th greedy token acts as EOS
  auto s = engine.submit(request(p, 8));
  const auto first = std::find(ref.begin(), ref.end(), ref[3]);  // may occur before index 3
  EXPECT_EQ(drain(*s), std::vector<int32_t>(ref.begin(), first));
  EXPECT_EQ(s->finish_reason(), FinishReason::Stop);
  // min_tokens masks the EOS: exactly max_tokens come out, none of them the EOS.
  SequenceRequest at_least = request(p, 8);
  at_least.min_tokens = 8;
  auto s2 = engine.submit(at_least);
  std::vector<int32_t> full = drain(*s2);
  EXPECT_EQ(full.size(), 8u);
  EXPECT_EQ(std::count(full.begin(), full.end(), ref[3]), 0);
  EXPECT_EQ(s2->finish_reason(), FinishReason::Length);
  // A presence penalty of 2 outweighs this model's logit spread: greedy never repeats a token.
  SequenceRequest r = request(p, 30);
  r.presence_penalty = 2.0f;
  Engine plain(tiny_model(), {}, {});
  std::vector<int32_t> out = drain(*plain.submit(r));
  std::sort(out.begin(), out.end());
  EXPECT_EQ(std::adjacent_find(out.begin(), out.end()), out.end());
}
