// End to end: GRPO on a trivially learnable task raises the reward of a tiny random model within
// a few steps; metrics.jsonl has the keys `whale plot` draws; the checkpoint is self-contained.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/error.h"
#include "core/mmap.h"
#include "io/checkpoint.h"
#include "rl/grpo.h"
#include "rl/rollout.h"
#include "tokenizer/trainer.h"
#include "train/pretrain.h"

using namespace whale;
using namespace whale::rl;
namespace fs = std::filesystem;

namespace {

// Reward 1 when the completion starts with a lower-case letter (about a fifth of a fresh
// model's first tokens): learnable by moving probability mass at one position.
class LowercaseTask : public Task {
 public:
  std::string name() const override { return "lowercase"; }
  std::vector<Problem> problems(Split split, int64_t count, uint64_t) const override {
    std::vector<Problem> out;
    for (int64_t i = 0; i < count; ++i) {
      Problem p;
      p.id = std::string(split == Split::Train ? "train-" : "test-") + std::to_string(i);
      p.question = "word " + std::to_string(i % 7);
      out.push_back(p);
    }
    return out;
  }
  RewardResult score(const Problem&, std::string_view completion) const override {
    RewardResult r;
    r.accuracy = !completion.empty() && std::islower(static_cast<unsigned char>(completion[0])) ? 1.0 : 0.0;
    return r;
  }
};

// A random tiny model with a small byte-level BPE tokenizer (DeepSeek's special tokens).
std::string make_model(const fs::path& dir) {
  tokenizer::TrainOptions to;
  to.vocab_size = 320;
  to.threads = 1;
  const std::string text =
      "the quick brown fox jumps over the lazy dog. 12 + 34 = 46. Pack my box with five dozen liquor jugs. ";
  std::vector<std::string> texts(20, text);
  const std::string tj = tokenizer::train_bpe_from_texts(texts, to);
  fs::create_directories(dir);
  { std::ofstream(dir / "tokenizer.json") << tj; }
  const auto tok = tokenizer::Tokenizer::from_file((dir / "tokenizer.json").string());
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  c.vocab_size = tok.vocab_size();
  c.eos_token_id = tok.token_to_id("<｜end▁of▁sentence｜>");
  c.bos_token_id = tok.token_to_id("<｜begin▁of▁sentence｜>");
  InitOptions init;
  init.seed = 7;
  auto m = init_model(c, init);
  save_model(*m, dir.string());
  return dir.string();
}

double mean_reward(const std::string& dir, const Task& task, uint64_t seed) {
  LoadOptions lo;
  lo.keep_bf16 = false;
  auto m = load_model(resolve_checkpoint(dir), lo);
  const auto tok = tokenizer::Tokenizer::from_file((fs::path(resolve_checkpoint(dir)) / "tokenizer.json").string());
  RolloutOptions ro;
  ro.group_size = 16;
  ro.max_tokens = 2;
  ro.sampling.temperature = 1.0f;
  ro.sampling.seed = seed;
  ro.format_weight = 0.0;
  const auto rs = sample_rollouts(*m, tok, task, task.problems(Split::Test, 4, 0), ro);
  double s = 0;
  for (const auto& r : rs) s += r.reward;
  return s / double(rs.size());
}

}  // namespace

TEST(GrpoTrain, RaisesRewardOnLearnableTask) {
  const fs::path root = fs::temp_directory_path() / ("whale_grpo_" + std::to_string(::getpid()));
  fs::remove_all(root);
  const std::string model = make_model(root / "init");
  LowercaseTask task;
  const double before = mean_reward(model, task, 99);
  GrpoOptions o;
  o.model = model;
  o.out_dir = (root / "run").string();
  o.steps = 8;
  o.prompts_per_step = 4;
  o.group_size = 8;
  o.updates_per_batch = 2;
  o.max_tokens = 2;
  o.lr = 1e-2;
  o.format_weight = 0.0;
  o.objective.kl_beta = 0.01;
  o.seed = 1;
  GrpoResult res = grpo(o, task, nullptr);
  const double after = mean_reward(o.out_dir, task, 99);
  EXPECT_GT(after, before + 0.3) << "before " << before << " after " << after;
  ASSERT_EQ(res.steps.size(), 8u);
  EXPECT_GT(res.steps.back().kl, 0.0);
  EXPECT_GT(res.steps.back().entropy, 0.0);

  // metrics.jsonl: one object per step with the keys the RL charts of `whale plot` read.
  std::ifstream in(fs::path(o.out_dir) / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"step", "reward", "accuracy", "response_length", "kl", "clip_fraction", "entropy",
                          "format_reward", "lr", "seconds"})
      EXPECT_TRUE(j.contains(k)) << k;
    ++lines;
  }
  EXPECT_EQ(lines, 8);
  // Self-contained checkpoint.
  const std::string ck = resolve_checkpoint(o.out_dir);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors",
                        "trainer_state.json"})
    EXPECT_TRUE(fs::exists(fs::path(ck) / f)) << f;

  // Resume for 3 more steps, saving each: the checkpoint resumed from is pruned meanwhile, and
  // the new ones must still carry the tokenizer.
  o.resume = o.out_dir;
  o.steps = 11;
  o.save_every = 1;
  GrpoResult more = grpo(o, task, nullptr);
  EXPECT_EQ(more.steps.size(), 3u);
  EXPECT_EQ(more.steps.front().step, 9);
  EXPECT_TRUE(fs::exists(fs::path(resolve_checkpoint(o.out_dir)) / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "step-000008"));
  std::ifstream again(fs::path(o.out_dir) / "metrics.jsonl");
  int total = 0;
  while (std::getline(again, line)) ++total;
  EXPECT_EQ(total, 11);
  fs::remove_all(root);
}

TEST(GrpoTrain, RejectsBadOptions) {
  LowercaseTask task;
  GrpoOptions o;
  o.model = "/nonexistent";
  o.group_size = 1;
  EXPECT_THROW(grpo(o, task, nullptr), Error);
  o.group_size = 4;
  o.objective.clip_low = 1.5;
  EXPECT_THROW(grpo(o, task, nullptr), Error);
}
