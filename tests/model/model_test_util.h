// Helpers shared by the model, kernel and GGUF tests that run a Transformer or quantise values.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "infer/kv_cache.h"
#include "model/transformer.h"

namespace whale::testing {

// n standard-normal floats from a seeded Rng.
inline std::vector<float> random_values(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(rng.normal());
  return v;
}

// Hidden states of a 7-token prefill followed by two decode steps (absorbed decode rows), one
// sequence, as tf is set up.
inline std::vector<float> prefill_and_decode_hidden(Transformer& tf, const ModelConfig& c) {
  const std::vector<int32_t> tokens{5, 9, 300, 17, 42, 8, 77, 3, 11};
  const int64_t H = c.hidden_size, n = int64_t(tokens.size());
  KVCache cache(c, n);
  std::vector<float> hidden(size_t(n * H)), all;
  tf.forward(tokens.data(), {SeqSpan{&cache, 0, 7, 0}}, hidden.data());
  all.insert(all.end(), hidden.begin(), hidden.begin() + 7 * H);
  for (int64_t t = 7; t < n; ++t) {
    tf.forward(tokens.data() + t, {SeqSpan{&cache, 0, 1, t}}, hidden.data());
    all.insert(all.end(), hidden.begin(), hidden.begin() + H);
  }
  return all;
}

}  // namespace whale::testing
