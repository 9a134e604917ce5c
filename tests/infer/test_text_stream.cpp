// TextStream against an independent reference: decode all tokens at once, cut at the first stop
// string and split with tokenizer::split_reasoning. Streams are random ids, random mixes of
// tag fragments, whitespace, CJK and emoji split into single bytes, and hand-derived cases.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "infer/text_stream.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/trainer.h"
#include "tokenizer/utf8.h"

namespace whale {
namespace {

using tokenizer::Tokenizer;

const Tokenizer& tiny_tokenizer() {
  static const Tokenizer tok = [] {
    std::string text;
    for (int i = 0; i < 50; ++i)
      text += "<think>\nthe user wants a cat. 深度求索 😀 é\n</think>\n\nThe cat sat on the mat. STOP here\n";
    tokenizer::TrainOptions options;
    options.vocab_size = 340;
    options.threads = 1;
    return Tokenizer::from_json(tokenizer::train_bpe_from_texts({text}, options), "tiny tokenizer");
  }();
  return tok;
}

// The shortest prefix of `text` that contains a stop string, minus that stop string.
std::string cut_at_stop(const std::string& text, const std::vector<std::string>& stops, bool* stopped) {
  size_t best_end = std::string::npos, best_pos = 0;
  for (const auto& s : stops) {
    size_t p = text.find(s);
    if (p == std::string::npos) continue;
    if (p + s.size() < best_end || (p + s.size() == best_end && p < best_pos)) best_end = p + s.size(), best_pos = p;
  }
  *stopped = best_end != std::string::npos;
  return *stopped ? text.substr(0, best_pos) : text;
}

TextDelta reference(const std::vector<int>& ids, bool starts_in_think, const std::vector<std::string>& stops,
                    bool* stopped) {
  std::string text = cut_at_stop(tiny_tokenizer().decode(ids, true), stops, stopped);
  size_t f = text.find_first_not_of(" \t\r\n");
  bool explicit_open = f != std::string::npos && std::string_view(text).substr(f).starts_with("<think>");
  if (!starts_in_think && !explicit_open) return {"", text};  // the documented difference
  auto split = tokenizer::split_reasoning(text, starts_in_think);
  return {split.reasoning, split.answer};
}

TextDelta stream_all(const std::vector<int>& ids, bool starts_in_think, const std::vector<std::string>& stops,
                     bool* stopped) {
  TextStream s(tiny_tokenizer(), starts_in_think, stops);
  TextDelta all;
  auto add = [&](const TextDelta& d) {
    EXPECT_TRUE(tokenizer::is_valid_utf8(d.reasoning));
    EXPECT_TRUE(tokenizer::is_valid_utf8(d.content));
    all.reasoning += d.reasoning;
    all.content += d.content;
  };
  for (int id : ids) add(s.push(id));
  add(s.finish());
  add(s.finish());  // a second finish adds nothing
  *stopped = s.stopped();
  return all;
}

std::string show(const std::vector<int>& ids) {
  std::string out;
  for (int id : ids) out += std::to_string(id) + ",";
  return out;
}

void expect_matches_reference(const std::vector<int>& ids, bool think, const std::vector<std::string>& stops) {
  bool ref_stopped = false, got_stopped = false;
  TextDelta want = reference(ids, think, stops, &ref_stopped);
  TextDelta got = stream_all(ids, think, stops, &got_stopped);
  ASSERT_EQ(got.reasoning, want.reasoning) << "think=" << think << " ids=" << show(ids);
  ASSERT_EQ(got.content, want.content) << "think=" << think << " ids=" << show(ids);
  ASSERT_EQ(got_stopped, ref_stopped) << show(ids);
}

int byte_id(unsigned char b) {
  return tiny_tokenizer().token_to_id(tokenizer::byte_level_encode(std::string(1, char(b))));
}

// A token stream of random fragments: tags whole or in pieces, whitespace, ASCII words, CJK and
// emoji (often as single-byte tokens, so characters split across tokens), stray bytes, and
// special tokens.
std::vector<int> random_fragments(std::mt19937& rng) {
  static const std::vector<std::string> pieces = {
      "<think>", "</think>", "<", "</", "</th", "ink>", "<thi", "nk>", "think", ">", "\n", "\n\n", " ", "\t",
      "the cat", " sat", "深度", "求索", "😀", "é", "STOP", "ST", "OP", "S", "x", "<｜end▁of▁sentence｜>"};
  const Tokenizer& tok = tiny_tokenizer();
  std::vector<int> ids;
  const int n = std::uniform_int_distribution<int>(0, 14)(rng);
  for (int i = 0; i < n; ++i) {
    const std::string& piece = pieces[std::uniform_int_distribution<size_t>(0, pieces.size() - 1)(rng)];
    const int how = std::uniform_int_distribution<int>(0, 9)(rng);
    if (how < 5) {
      for (int id : tok.encode(piece)) ids.push_back(id);
    } else if (how < 9) {
      for (unsigned char b : piece) ids.push_back(byte_id(b));  // byte by byte
    } else {
      ids.push_back(byte_id(static_cast<unsigned char>(std::uniform_int_distribution<int>(0x80, 0xFF)(rng))));
    }
  }
  return ids;
}

TEST(TextStream, HandDerivedSplits) {
  const Tokenizer& tok = tiny_tokenizer();
  bool stopped = false;
  auto run = [&](const std::string& text, bool think, std::vector<std::string> stops = {}) {
    std::vector<int> ids;
    for (unsigned char b : text) ids.push_back(byte_id(b));
    return stream_all(ids, think, stops, &stopped);
  };
  TextDelta d = run("hmm\n\nyes\n</think>\n\nThe answer.", true);
  EXPECT_EQ(d.reasoning, "hmm\n\nyes");
  EXPECT_EQ(d.content, "The answer.");
  d = run("  <think>\nplan\n</think> ok", false);
  EXPECT_EQ(d.reasoning, "plan");
  EXPECT_EQ(d.content, "ok");
  d = run(" plain answer </think> x", false);
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, " plain answer </think> x");
  d = run("still thinking\n\n", true);
  EXPECT_EQ(d.reasoning, "still thinking");
  EXPECT_EQ(d.content, "");
  d = run("a</thi", true);
  EXPECT_EQ(d.reasoning, "a</thi");
  d = run("r</think>answer STOP more", true, {"STOP"});
  EXPECT_EQ(d.reasoning, "r");
  EXPECT_EQ(d.content, "answer ");
  EXPECT_TRUE(stopped);
  // Whole-token tags (the tokenizer's added tokens) work like spelled-out ones.
  std::vector<int> ids = tok.encode("<think>\nx\n</think>\n\ny");
  EXPECT_EQ(ids.front(), tok.token_to_id("<think>"));
  d = stream_all(ids, false, {}, &stopped);
  EXPECT_EQ(d.reasoning, "x");
  EXPECT_EQ(d.content, "y");
}

TEST(TextStream, EmitsAsSoonAsTextIsCertain) {
  const std::string emoji = "😀";
  TextStream s(tiny_tokenizer(), false, {"STOP"});
  for (size_t i = 0; i + 1 < emoji.size(); ++i) EXPECT_TRUE(s.push(byte_id(emoji[i])).empty());
  EXPECT_EQ(s.push(byte_id(emoji.back())).content, emoji);
  EXPECT_EQ(s.push(byte_id('a')).content, "a");
  EXPECT_TRUE(s.push(byte_id('S')).empty());  // may start "STOP"
  EXPECT_EQ(s.push(byte_id('x')).content, "Sx");
  EXPECT_TRUE(s.push(byte_id('S')).empty());
  EXPECT_TRUE(s.push(byte_id('T')).empty());
  EXPECT_TRUE(s.push(byte_id('O')).empty());
  EXPECT_TRUE(s.push(byte_id('P')).empty());
  EXPECT_TRUE(s.stopped());
  EXPECT_TRUE(s.push(byte_id('z')).empty());
  EXPECT_TRUE(s.finish().empty());

  TextStream r(tiny_tokenizer(), true);
  EXPECT_TRUE(r.push(byte_id('\n')).empty());  // leading newline of the reasoning: dropped
  EXPECT_EQ(r.push(byte_id('a')).reasoning, "a");
  EXPECT_TRUE(r.push(byte_id('\n')).empty());  // may be the newline before "</think>"
  EXPECT_EQ(r.push(byte_id('b')).reasoning, "\nb");
  // An unfinished character at the end becomes U+FFFD, as decode() makes it.
  r.push(byte_id(0xE6));
  EXPECT_EQ(r.finish().reasoning, "\xEF\xBF\xBD");
}

TEST(TextStream, RandomFragmentsMatchReference) {
  std::mt19937 rng(7);
  const std::vector<std::vector<std::string>> stop_sets = {{}, {"STOP"}, {"STOP", "OP", "😀"}, {"</think>"}};
  for (int i = 0; i < 3000; ++i) {
    std::vector<int> ids = random_fragments(rng);
    expect_matches_reference(ids, i % 2 == 0, stop_sets[size_t(i / 2) % stop_sets.size()]);
  }
}

TEST(TextStream, RandomIdsMatchReference) {
  std::mt19937 rng(11);
  const int vocab = tiny_tokenizer().vocab_size();
  for (int i = 0; i < 2000; ++i) {
    std::vector<int> ids(std::uniform_int_distribution<size_t>(0, 24)(rng));
    for (int& id : ids) id = std::uniform_int_distribution<int>(0, vocab + 2)(rng);  // a few unknown ids too
    expect_matches_reference(ids, i % 2 == 0, i % 3 == 0 ? std::vector<std::string>{"e", "th"} : std::vector<std::string>{});
  }
}

TEST(TextStream, RejectsEmptyStopString) {
  EXPECT_THROW(TextStream(tiny_tokenizer(), false, {"ok", ""}), Error);
}

}  // namespace
}  // namespace whale
