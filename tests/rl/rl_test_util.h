// A tiny tokenizer with DeepSeek's chat tokens and a random tiny checkpoint that uses it, for the
// SFT, eval and distillation tests.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>

#include "io/checkpoint.h"
#include "rl/task.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace whale::rl_test {

inline const char* kBos = "<｜begin▁of▁sentence｜>";
inline const char* kEos = "<｜end▁of▁sentence｜>";

// tokenizer.json text trained on arithmetic traces (so digits and the markers are well covered).
inline std::string tokenizer_json() {
  std::vector<std::string> texts;
  auto task = rl::make_task("arith:digits=2,ops=+-");
  for (const auto& p : task->problems(rl::Split::Train, 200, 1)) texts.push_back(p.question + " " + p.reference_trace);
  tokenizer::TrainOptions o;
  o.vocab_size = 300;
  o.threads = 1;
  return tokenizer::train_bpe_from_texts(texts, o);
}

inline tokenizer::Tokenizer make_tokenizer() {
  tokenizer::TokenizerConfig cfg;
  cfg.bos_token = kBos;
  cfg.eos_token = kEos;
  return tokenizer::Tokenizer::from_json(tokenizer_json(), "test tokenizer", cfg);
}

// DIR with config.json + model.safetensors (configs/tiny-v3.json, BOS/EOS ids of the tokenizer)
// and tokenizer.json + tokenizer_config.json.
inline void make_checkpoint(const std::string& dir, uint64_t seed) {
  std::filesystem::create_directories(dir);
  const std::string json = tokenizer_json();
  { std::ofstream(dir + "/tokenizer.json") << json; }
  {
    std::ofstream(dir + "/tokenizer_config.json")
        << R"({"add_bos_token": true, "bos_token": ")" << kBos << R"(", "eos_token": ")" << kEos << R"("})";
  }
  const auto tok = tokenizer::Tokenizer::from_file(dir + "/tokenizer.json");
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  c.bos_token_id = tok.bos_id();
  c.eos_token_id = tok.eos_id();
  InitOptions init;
  init.seed = seed;
  auto m = init_model(c, init);
  save_model(*m, dir);
}

}  // namespace whale::rl_test
