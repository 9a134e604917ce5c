#include "rl/rollout.h"

#include "core/error.h"
#include "infer/generate.h"

namespace whale::rl {

std::vector<int32_t> encode_prompt(const tokenizer::Tokenizer& tok, const std::string& question,
                                   tokenizer::ChatFormat format) {
  tokenizer::ChatOptions co;
  co.add_generation_prompt = true;
  const std::string text = tokenizer::render_chat({{"user", question, {}}}, format, co);
  std::vector<int> ids = tok.encode(text, false);
  if (tok.bos_id() >= 0 && (ids.empty() || ids.front() != tok.bos_id())) ids.insert(ids.begin(), tok.bos_id());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string completion_for_scoring(const std::string& generated, tokenizer::ChatFormat format) {
  return format == tokenizer::ChatFormat::DeepSeekR1 ? "<think>\n" + generated : generated;
}

std::vector<Rollout> sample_rollouts(const Model& policy, const tokenizer::Tokenizer& tok, const Task& task,
                                     const std::vector<Problem>& problems, const RolloutOptions& options) {
  if (options.group_size <= 0) throw Error("--group-size", "must be positive");
  std::vector<Rollout> out;
  std::vector<std::vector<int32_t>> prompts;
  for (size_t p = 0; p < problems.size(); ++p) {
    const std::vector<int32_t> ids = encode_prompt(tok, problems[p].question, options.format);
    for (int64_t g = 0; g < options.group_size; ++g) {
      Rollout r;
      r.problem = int64_t(p);
      r.prompt = ids;
      out.push_back(std::move(r));
      prompts.push_back(ids);
    }
  }
  if (prompts.empty()) return out;
  // The Transformer caches weight-derived buffers at construction, so each call builds one from
  // the current weights.
  Generator gen(policy);
  GenerateOptions go;
  go.max_tokens = options.max_tokens;
  go.sampling = options.sampling;
  go.stop_at_eos = true;
  const auto completions = gen.generate(prompts, go);
  const int32_t eos = int32_t(policy.config.eos_token_id);
  for (size_t i = 0; i < out.size(); ++i) {
    Rollout& r = out[i];
    r.completion = completions[i];
    r.finished = !r.completion.empty() && r.completion.back() == eos;
    const std::vector<int> ids(r.completion.begin(), r.completion.end());
    r.text = tok.decode(ids, true);
    r.result = task.score(problems[size_t(r.problem)], completion_for_scoring(r.text, options.format));
    r.reward = r.result.accuracy + options.format_weight * r.result.format;
  }
  return out;
}

}  // namespace whale::rl
