// What the task implementations share: option parsing, the train/test split rule, answer
// extraction and numeric scoring. Internal to src/rl.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "rl/expr.h"
#include "rl/task.h"

namespace whale::rl {

using TaskOptions = std::map<std::string, std::string>;

// Integer option `key` in [lo, hi] (default when absent); throws whale::Error naming spec and key.
int64_t option_int(const TaskOptions& options, const std::string& key, int64_t fallback, int64_t lo, int64_t hi,
                   const std::string& spec);
// Throws when options hold a key outside `known`.
void check_option_keys(const TaskOptions& options, std::initializer_list<const char*> known, const std::string& spec);

// Stable 64-bit hash of text (FNV-1a, then a splitmix64 finaliser).
uint64_t stable_hash(std::string_view text);
// Generated tasks put a problem in Test when the hash of its canonical key is 0 mod 8: a rule on
// the problem itself, so the splits can never share a problem whatever the seeds.
inline bool is_test_key(std::string_view key) { return stable_hash(key) % 8 == 0; }
// A per-(task, split, seed) stream seed.
uint64_t stream_seed(std::string_view task, Split split, uint64_t seed);

// The answer part of a completion: after the last "</think>"; the whole completion when it has no
// think tags; empty when reasoning was opened but never closed.
std::string_view answer_part(std::string_view completion);
// Accuracy 1 when the last number of the answer part equals `expected` exactly.
RewardResult score_numeric(std::string_view completion, const Rational& expected);

std::unique_ptr<Task> make_arith_task(const TaskOptions& options, const std::string& spec);
std::unique_ptr<Task> make_countdown_task(const TaskOptions& options, const std::string& spec);
std::unique_ptr<Task> make_gsm8k_task(const TaskOptions& options, const std::string& spec);

}  // namespace whale::rl
