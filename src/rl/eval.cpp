#include "rl/eval.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/train_graph.h"
#include "rl/expr.h"
#include "rl/rollout.h"

namespace whale::rl {

namespace {

// Votes are counted on a canonical form, so "1,234" and "1234" are one answer.
std::string vote_key(const std::string& extracted) {
  if (const auto n = parse_number(extracted)) return n->str();
  std::string k;
  for (char c : extracted)
    if (c != ' ' && c != '\t') k += c;
  return k;
}

}  // namespace

EvalReport evaluate_task(const Task& task, const std::vector<Problem>& problems, int64_t samples,
                         const CompletionFn& complete) {
  if (samples <= 0) throw Error("--samples", "must be at least 1");
  EvalReport rep;
  rep.task = task.name();
  rep.problems = int64_t(problems.size());
  rep.samples = samples;
  if (problems.empty()) return rep;
  const std::vector<std::string> texts = complete(problems, samples);
  if (texts.size() != problems.size() * size_t(samples))
    throw Error("evaluation", "expected " + std::to_string(problems.size() * size_t(samples)) + " completions, got " +
                                  std::to_string(texts.size()));
  double chars = 0, formatted = 0;
  for (size_t p = 0; p < problems.size(); ++p) {
    ProblemResult pr;
    pr.id = problems[p].id;
    pr.question = problems[p].question;
    pr.answer = problems[p].answer;
    std::map<std::string, std::pair<int64_t, size_t>> votes;  // key -> (count, first sample)
    std::map<std::string, bool> key_correct;
    for (int64_t s = 0; s < samples; ++s) {
      const std::string& text = texts[p * size_t(samples) + size_t(s)];
      const RewardResult r = task.score(problems[p], text);
      pr.correct += r.accuracy > 0.5;
      pr.formatted += r.format > 0.5;
      pr.completions.push_back(text);
      pr.extracted.push_back(r.extracted);
      chars += double(text.size());
      if (r.extracted.empty()) continue;
      const std::string key = vote_key(r.extracted);
      auto [it, fresh] = votes.try_emplace(key, 0, size_t(s));
      it->second.first += 1;
      key_correct[key] = key_correct[key] || r.accuracy > 0.5;
    }
    // Majority: most votes, ties to the answer that appeared first.
    int64_t best = 0;
    size_t best_first = 0;
    for (const auto& [key, v] : votes)
      if (v.first > best || (v.first == best && v.second < best_first)) {
        best = v.first;
        best_first = v.second;
        pr.majority = key;
      }
    pr.majority_correct = best > 0 && key_correct[pr.majority];
    rep.pass_at_1 += double(pr.correct) / double(samples);
    rep.maj_at_k += pr.majority_correct ? 1.0 : 0.0;
    rep.pass_at_k += pr.correct > 0 ? 1.0 : 0.0;
    formatted += double(pr.formatted);
    rep.results.push_back(std::move(pr));
  }
  const double n = double(problems.size());
  rep.pass_at_1 /= n;
  rep.maj_at_k /= n;
  rep.pass_at_k /= n;
  rep.format_rate = formatted / (n * double(samples));
  rep.mean_chars = chars / (n * double(samples));
  return rep;
}

nlohmann::json EvalReport::to_json(int64_t max_completions_per_problem) const {
  nlohmann::json j = {{"task", task},           {"problems", problems},   {"samples", samples},
                      {"pass@1", pass_at_1},    {"maj@k", maj_at_k},      {"pass@k", pass_at_k},
                      {"format_rate", format_rate}, {"mean_completion_chars", mean_chars}};
  nlohmann::json per = nlohmann::json::array();
  for (const auto& r : results) {
    nlohmann::json c = nlohmann::json::array();
    for (size_t i = 0; i < r.completions.size() && int64_t(i) < max_completions_per_problem; ++i)
      c.push_back({{"text", r.completions[i]}, {"extracted", r.extracted[i]}});
    per.push_back({{"id", r.id}, {"question", r.question}, {"answer", r.answer}, {"correct", r.correct},
                   {"majority", r.majority}, {"majority_correct", r.majority_correct}, {"completions", c}});
  }
  j["results"] = per;
  return j;
}

CompletionFn model_completions(const Model& model, const tokenizer::Tokenizer& tok, const SampleOptions& options,
                               Progress* progress) {
  return [&model, &tok, options, progress](const std::vector<Problem>& problems, int64_t samples) {
    if (options.batch <= 0) throw Error("--batch", "must be positive");
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& p : problems) {
      const auto ids = encode_prompt(tok, p.question, options.format);
      for (int64_t s = 0; s < samples; ++s) prompts.push_back(ids);
    }
    GenerateOptions go;
    go.max_tokens = options.max_tokens;
    go.stop_at_eos = true;
    if (tok.eos_id() >= 0) go.stop_tokens.push_back(int32_t(tok.eos_id()));
    Generator gen(model);
    std::vector<std::string> out;
    if (progress) progress->start("sample", int64_t(prompts.size()));
    for (size_t lo = 0; lo < prompts.size(); lo += size_t(options.batch)) {
      const size_t hi = std::min(prompts.size(), lo + size_t(options.batch));
      std::vector<std::vector<int32_t>> chunk(prompts.begin() + long(lo), prompts.begin() + long(hi));
      go.sampling = options.sampling;
      go.sampling.seed = options.sampling.seed + uint64_t(lo);  // sequence i's stream: seed + i overall
      for (const auto& seq : gen.generate(chunk, go)) {
        const std::vector<int> ids(seq.begin(), seq.end());
        out.push_back(completion_for_scoring(tok.decode(ids, true), options.format));
      }
      if (progress) progress->update(int64_t(hi));
    }
    if (progress) progress->finish();
    return out;
  };
}

PerplexityReport perplexity(const Model& model, const std::vector<int32_t>& tokens, int64_t window,
                            Progress* progress) {
  PerplexityReport rep;
  if (tokens.size() < 2) throw Error("--perplexity", "the text must have at least 2 tokens");
  const int64_t T = window > 0 ? window : model.config.max_position_embeddings - 1;
  if (T < 1 || T + 1 > model.config.max_position_embeddings)
    throw Error("--window", std::to_string(T) + " is outside [1, max_position_embeddings - 1 = " +
                                std::to_string(model.config.max_position_embeddings - 1) + "]");
  TrainGraph graph(model);
  const int64_t n = int64_t(tokens.size());
  const int64_t windows = (n - 1 + T - 1) / T;
  if (progress) progress->start("perplexity", windows);
  double total = 0;
  for (int64_t start = 0, w = 0; start + 1 < n; start += T, ++w) {
    const int64_t t = std::min(T, n - 1 - start);
    TrainBatch batch{1, t, tokens.data() + start, nullptr};
    total += graph.forward(batch, {}).main_loss * double(t);
    rep.tokens += t;
    ++rep.windows;
    if (progress) progress->update(w + 1);
  }
  if (progress) progress->finish();
  rep.window = T;
  rep.mean_nll = total / double(rep.tokens);
  rep.perplexity = std::exp(rep.mean_nll);
  return rep;
}

}  // namespace whale::rl
