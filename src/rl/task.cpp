// make_task, the format reward and what the three tasks share.
#include "core/error.h"
#include "rl/task_common.h"

namespace whale::rl {

namespace {

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

uint64_t splitmix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t stable_hash(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return splitmix(h);
}

uint64_t stream_seed(std::string_view task, Split split, uint64_t seed) {
  return splitmix(stable_hash(task) ^ splitmix(seed) ^ (split == Split::Test ? 0x7465737400ull : 0x747261696eull));
}

int64_t option_int(const TaskOptions& options, const std::string& key, int64_t fallback, int64_t lo, int64_t hi,
                   const std::string& spec) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  const std::string& v = it->second;
  size_t used = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || x < lo || x > hi)
    throw Error("task '" + spec + "'", key + "=" + v + " is not an integer in [" + std::to_string(lo) + ", " +
                                           std::to_string(hi) + "]");
  return x;
}

void check_option_keys(const TaskOptions& options, std::initializer_list<const char*> known, const std::string& spec) {
  for (const auto& [k, v] : options) {
    bool ok = false;
    std::string list;
    for (const char* name : known) {
      ok = ok || k == name;
      list += std::string(list.empty() ? "" : ", ") + name;
    }
    if (!ok) throw Error("task '" + spec + "'", "unknown option '" + k + "' (expected " + list + ")");
  }
}

std::unique_ptr<Task> make_task(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  TaskOptions options;
  if (colon != std::string::npos) {
    std::string_view rest = std::string_view(spec).substr(colon + 1);
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      const size_t eq = item.find('=');
      if (eq == std::string_view::npos || eq == 0)
        throw Error("task '" + spec + "'", "option '" + std::string(item) + "' is not key=value");
      options[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
  }
  if (name == "arith") return make_arith_task(options, spec);
  if (name == "countdown") return make_countdown_task(options, spec);
  if (name == "gsm8k") return make_gsm8k_task(options, spec);
  throw Error("task '" + spec + "'", "unknown task '" + name + "' (expected arith, countdown or gsm8k)");
}

double format_reward(std::string_view completion) {
  std::string_view c = trim(completion);
  // The prompt may already have opened the reasoning (R1's generation prompt ends "<think>\n").
  if (c.starts_with("<think>")) c.remove_prefix(7);
  const size_t close = c.find("</think>");
  if (close == std::string_view::npos) return 0.0;
  if (c.substr(0, close).find("<think>") != std::string_view::npos) return 0.0;
  const std::string_view answer = trim(c.substr(close + 8));
  if (answer.empty() || answer.find("<think>") != std::string_view::npos ||
      answer.find("</think>") != std::string_view::npos)
    return 0.0;
  return 1.0;
}

std::string_view answer_part(std::string_view completion) {
  const size_t close = completion.rfind("</think>");
  if (close != std::string_view::npos) return trim(completion.substr(close + 8));
  if (completion.find("<think>") != std::string_view::npos) return {};
  return trim(completion);
}

RewardResult score_numeric(std::string_view completion, const Rational& expected) {
  RewardResult r;
  r.format = format_reward(completion);
  std::string text;
  const auto value = last_number(answer_part(completion), &text);
  r.extracted = text;
  r.accuracy = value && *value == expected ? 1.0 : 0.0;
  return r;
}

}  // namespace whale::rl
