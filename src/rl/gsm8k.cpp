// GSM8K (Cobbe et al. 2021, MIT licence) from its jsonl: {"question": ..., "answer": "...#### 42"}.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/mmap.h"
#include "core/rng.h"
#include "rl/task_common.h"

namespace whale::rl {

namespace {

namespace fs = std::filesystem;

// The solution without the calculator annotations "<<16-3-4=9>>" and the final "#### " line.
std::string clean_solution(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 2, "<<") == 0) {
      const size_t e = s.find(">>", i + 2);
      if (e != std::string::npos) {
        i = e + 2;
        continue;
      }
    }
    out += s[i++];
  }
  const size_t hash = out.rfind("####");
  if (hash != std::string::npos) out.resize(hash);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::vector<Problem> load_jsonl(const std::string& path, const std::string& split_name) {
  std::istringstream in(read_text_file(path));
  std::vector<Problem> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw Error(where, std::string("not valid JSON (") + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("question") || !j["question"].is_string() || !j.contains("answer") ||
        !j["answer"].is_string())
      throw Error(where, "expected {\"question\": string, \"answer\": string}");
    const std::string answer = j["answer"].get<std::string>();
    const size_t hash = answer.rfind("####");
    if (hash == std::string::npos) throw Error(where, "the answer has no '#### NUMBER' line");
    std::string final_text = answer.substr(hash + 4);
    const auto value = parse_number(final_text);
    if (!value || !value->is_integer())
      throw Error(where, "the final answer '" + final_text + "' is not an integer (commas allowed, e.g. 1,234)");
    Problem p;
    p.id = "gsm8k-" + split_name + "-" + std::to_string(out.size());
    p.question = j["question"].get<std::string>();
    p.answer = std::to_string(value->num);
    p.target = value->num;
    p.reference_trace = "<think>\n" + clean_solution(answer) + "\n</think>\n\n" + p.answer;
    out.push_back(std::move(p));
  }
  if (out.empty()) throw Error(path, "holds no problems");
  return out;
}

class Gsm8kTask : public Task {
 public:
  explicit Gsm8kTask(const std::string& path) {
    if (fs::is_directory(path)) {
      train_ = load_jsonl((fs::path(path) / "train.jsonl").string(), "train");
      test_ = load_jsonl((fs::path(path) / "test.jsonl").string(), "test");
    } else {
      // One file: its problems are split by the hash of the question, one in eight held out.
      for (auto& p : load_jsonl(path, "all")) (is_test_key(p.question) ? test_ : train_).push_back(std::move(p));
      for (size_t i = 0; i < train_.size(); ++i) train_[i].id = "gsm8k-train-" + std::to_string(i);
      for (size_t i = 0; i < test_.size(); ++i) test_[i].id = "gsm8k-test-" + std::to_string(i);
    }
  }
  std::string name() const override { return "gsm8k"; }

  // Seed 0 keeps the file order (the usual "first N" evaluation); other seeds shuffle.
  std::vector<Problem> problems(Split split, int64_t count, uint64_t seed) const override {
    std::vector<Problem> all = split == Split::Test ? test_ : train_;
    if (seed != 0) {
      Rng rng(stream_seed("gsm8k", split, seed));
      for (size_t i = all.size(); i > 1; --i) std::swap(all[i - 1], all[size_t(rng.next() % i)]);
    }
    if (count > 0 && size_t(count) < all.size()) all.resize(size_t(count));
    return all;
  }

  RewardResult score(const Problem& problem, std::string_view completion) const override {
    return score_numeric(completion, Rational{problem.target, 1});
  }

 private:
  std::vector<Problem> train_, test_;
};

}  // namespace

std::unique_ptr<Task> make_gsm8k_task(const TaskOptions& options, const std::string& spec) {
  check_option_keys(options, {"path"}, spec);
  const std::string path = options.count("path") ? options.at("path") : "data/gsm8k";
  if (!fs::exists(path))
    throw Error("task '" + spec + "'", "path " + path + " does not exist (a GSM8K jsonl file or a directory with "
                                       "train.jsonl and test.jsonl; the repository ships data/gsm8k)");
  return std::make_unique<Gsm8kTask>(path);
}

}  // namespace whale::rl
