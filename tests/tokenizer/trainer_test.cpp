// BPE training: merge order, vocab layout, special tokens and determinism.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace whale::tokenizer {
namespace {

std::vector<std::string> small_corpus() {
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += "the cat sat on the mat with the hat. 深度求索 1234567 <｜User｜> lower lowest newer\n";
  return {text, "the the the other thing"};
}

TEST(TokenizerTrainer, LearnsMostFrequentPairsFirst) {
  TrainOptions options;
  options.vocab_size = 300;
  TrainStats stats;
  std::string json = train_bpe_from_texts(small_corpus(), options, nullptr, &stats);
  auto j = nlohmann::json::parse(json);
  const auto& merges = j["model"]["merges"];
  ASSERT_GT(merges.size(), 5u);
  // "th" occurs 4 times a line (the x3, with) plus 5 times in the last text: 805;
  // "at" 4 times a line (cat, sat, mat, hat): 800. Nothing else comes close.
  EXPECT_EQ(merges[0], (nlohmann::json{"t", "h"}));
  EXPECT_EQ(merges[1], (nlohmann::json{"a", "t"}));
  EXPECT_EQ(stats.vocab_size, int(256 + merges.size() + deepseek_special_tokens().size()));
  EXPECT_LE(stats.vocab_size, 300);
}

TEST(TokenizerTrainer, WritesALoadableTokenizerWithDeepSeekSpecials) {
  TrainOptions options;
  options.vocab_size = 400;
  std::string json = train_bpe_from_texts(small_corpus(), options);
  Tokenizer tok = Tokenizer::from_json(json, "trained");
  auto j = nlohmann::json::parse(json);
  const std::vector<SpecialToken> specials = deepseek_special_tokens();
  int first_special = int(j["model"]["vocab"].size());
  for (size_t i = 0; i < specials.size(); ++i) {
    const SpecialToken& s = specials[i];
    EXPECT_EQ(tok.token_to_id(s.content), first_special + int(i)) << s.content;
  }
  const std::string text = "<｜begin▁of▁sentence｜>the cat<｜User｜>hi<think>\nhmm\n</think>é😀<｜end▁of▁sentence｜>";
  std::vector<int> ids = tok.encode(text);
  EXPECT_EQ(ids.front(), tok.token_to_id("<｜begin▁of▁sentence｜>"));
  EXPECT_EQ(ids.back(), tok.token_to_id("<｜end▁of▁sentence｜>"));
  EXPECT_EQ(tok.decode(ids), text);
  // " the" was frequent enough to become a single token.
  EXPECT_EQ(tok.encode(" the").size(), 1u);
}

TEST(TokenizerTrainer, SameResultForAnyThreadCount) {
  TrainOptions one, two;
  one.vocab_size = two.vocab_size = 350;
  one.threads = 1;
  two.threads = 2;
  EXPECT_EQ(train_bpe_from_texts(small_corpus(), one), train_bpe_from_texts(small_corpus(), two));
}

TEST(TokenizerTrainer, RejectsTooSmallVocabAndMissingFiles) {
  TrainOptions options;
  options.vocab_size = 100;
  EXPECT_THROW(train_bpe_from_texts(small_corpus(), options), Error);
  options.vocab_size = 1000;
  EXPECT_THROW(train_bpe({"/nonexistent/file.txt"}, options), Error);
}

TEST(TokenizerTrainer, StopsWhenPairsAreRare) {
  TrainOptions options;
  options.vocab_size = 5000;
  options.min_frequency = 2;
  TrainStats stats;
  train_bpe_from_texts({"abcdefg abcdefg"}, options, nullptr, &stats);
  EXPECT_LT(stats.vocab_size, 5000);
  EXPECT_GT(stats.merges, 0);
}

}  // namespace
}  // namespace whale::tokenizer
