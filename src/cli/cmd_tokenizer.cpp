// whale tokenizer encode|decode|info|train: thin wrappers over src/tokenizer.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/mmap.h"
#include "core/progress.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace whale::cli {
namespace {

using tokenizer::Tokenizer;

// The inputs to read: the named files in order, or stdin when there are none.
std::vector<std::string> read_inputs(const std::vector<std::string>& files) {
  std::vector<std::string> out;
  if (files.empty()) {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    out.push_back(ss.str());
    return out;
  }
  for (const auto& path : files) out.push_back(read_text_file(path));
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

struct Common {
  std::string tokenizer;
  std::vector<std::string> files;
  bool jsonl = false;
};

void add_common(CLI::App* cmd, Common& c) {
  cmd->add_option("--tokenizer", c.tokenizer, "tokenizer.json (tokenizer_config.json beside it is read too)")
      ->required();
  cmd->add_option("files", c.files, "Input files (default: stdin)");
}

void run_encode(const Common& c, bool add_special, bool bos, int threads) {
  Tokenizer tok = Tokenizer::from_file(c.tokenizer);
  if (bos && tok.bos_id() < 0) throw Error(c.tokenizer, "--bos: no bos_token in tokenizer_config.json");
  auto with_bos = [&](std::vector<int>& ids) {
    if (bos && (ids.empty() || ids[0] != tok.bos_id())) ids.insert(ids.begin(), tok.bos_id());
  };
  for (const std::string& input : read_inputs(c.files)) {
    if (!c.jsonl) {
      std::vector<int> ids = tok.encode(input, add_special);
      with_bos(ids);
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) line += ' ';
        line += std::to_string(ids[i]);
      }
      std::printf("%s\n", line.c_str());
      continue;
    }
    std::vector<std::string> lines = split_lines(input), texts;
    texts.reserve(lines.size());
    for (size_t i = 0; i < lines.size(); ++i) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(lines[i]);
      } catch (const nlohmann::json::exception& e) {
        throw Error("line " + std::to_string(i + 1), std::string("not a JSON string: ") + e.what());
      }
      if (!j.is_string()) throw Error("line " + std::to_string(i + 1), "expected a JSON string, got " + j.dump());
      texts.push_back(j.get<std::string>());
    }
    auto all = tok.encode_batch(texts, add_special, threads);
    std::string out;
    for (auto& ids : all) {
      with_bos(ids);
      out += '[';
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out += ',';
        out += std::to_string(ids[i]);
      }
      out += "]\n";
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
}

std::vector<int> parse_ids(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) throw Error(where, "expected a JSON array of ids");
  std::vector<int> ids;
  for (const auto& v : j) {
    if (!v.is_number_integer()) throw Error(where, "expected integer ids, got " + v.dump());
    ids.push_back(v.get<int>());
  }
  return ids;
}

void run_decode(const Common& c, bool skip_special) {
  Tokenizer tok = Tokenizer::from_file(c.tokenizer);
  for (const std::string& input : read_inputs(c.files)) {
    if (!c.jsonl) {
      std::vector<int> ids;
      std::string text = input;
      for (char& ch : text)
        if (ch == ',' || ch == '[' || ch == ']') ch = ' ';
      std::istringstream ss(text);
      std::string word;
      while (ss >> word) {
        try {
          size_t used = 0;
          ids.push_back(std::stoi(word, &used));
          if (used != word.size()) throw std::invalid_argument(word);
        } catch (const std::exception&) {
          throw Error("decode input", "\"" + word + "\" is not a token id");
        }
      }
      std::string out = tok.decode(ids, skip_special);
      std::fwrite(out.data(), 1, out.size(), stdout);
      continue;
    }
    std::vector<std::string> lines = split_lines(input);
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string where = "line " + std::to_string(i + 1);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(lines[i]);
      } catch (const nlohmann::json::exception& e) {
        throw Error(where, std::string("not JSON: ") + e.what());
      }
      std::printf("%s\n", nlohmann::json(tok.decode(parse_ids(j, where), skip_special)).dump().c_str());
    }
  }
}

// Patterns hold raw CR/LF characters; show them escaped so each split stays on one line.
std::string printable(std::string s) {
  std::string out;
  for (char c : s) out += c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : std::string(1, c);
  return out;
}

void run_info(const std::string& path) {
  Tokenizer tok = Tokenizer::from_file(path);
  const auto& pre = tok.pre_tokenizer();
  std::printf("tokenizer:      %s\n", path.c_str());
  std::printf("vocab size:     %d (BPE entries %zu, merges %zu, added tokens %zu)\n", tok.vocab_size(),
              tok.model().vocab_entries(), tok.model().merge_count(), tok.added_tokens().tokens().size());
  std::string forms;
  for (auto f : tok.normalizer().forms()) forms += std::string(forms.empty() ? "" : ", ") + tokenizer::normal_form_name(f);
  std::printf("normalizer:     %s\n", forms.empty() ? "none" : forms.c_str());
  for (size_t i = 0; i < pre.rules().size(); ++i)
    std::printf("split %zu:        %s%s /%s/\n", i, tokenizer::split_behavior_name(pre.rules()[i].behavior),
                pre.rules()[i].invert ? " (inverted)" : "", printable(pre.rules()[i].source).c_str());
  std::printf("byte level:     yes%s\n", pre.add_prefix_space() ? " (adds a prefix space)" : "");
  auto show = [&](const char* name, int id) {
    if (id >= 0) std::printf("%-15s %d %s\n", name, id, tok.id_to_token(id).c_str());
  };
  show("bos:", tok.bos_id());
  show("eos:", tok.eos_id());
  std::printf("add bos/eos:    %s/%s\n", tok.config().add_bos_token ? "yes" : "no", tok.config().add_eos_token ? "yes" : "no");
  int specials = 0;
  std::string listed;
  for (const auto& t : tok.added_tokens().tokens()) {
    if (!t.special) continue;
    if (++specials <= 12) listed += "  " + std::to_string(t.id) + " " + t.content + "\n";
  }
  std::printf("special tokens: %d\n%s", specials, listed.c_str());
  if (specials > 12) std::printf("  ...\n");
  std::printf("chat template:  %s\n", tok.config().chat_template.empty() ? "none" : "yes (tokenizer_config.json)");
}

// Each line: a JSON array of messages, or {"messages": [...], "add_generation_prompt": bool}.
void run_chat(const std::vector<std::string>& files, const std::string& format_name, bool generation_prompt) {
  tokenizer::ChatFormat format = tokenizer::parse_chat_format(format_name);
  for (const std::string& input : read_inputs(files)) {
    std::vector<std::string> lines = split_lines(input);
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
      std::string where = "line " + std::to_string(i + 1);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(lines[i]);
      } catch (const nlohmann::json::exception& e) {
        throw Error(where, std::string("not JSON: ") + e.what());
      }
      tokenizer::ChatOptions options;
      options.add_generation_prompt = generation_prompt;
      const nlohmann::json* messages = &j;
      if (j.is_object()) {
        if (!j.contains("messages")) throw Error(where, "expected a \"messages\" array");
        messages = &j["messages"];
        if (j.contains("add_generation_prompt") && j["add_generation_prompt"].is_boolean())
          options.add_generation_prompt = j["add_generation_prompt"].get<bool>();
      }
      std::string text = tokenizer::render_chat(tokenizer::chat_messages_from_json(*messages, where), format, options);
      std::printf("%s\n", nlohmann::json(text).dump().c_str());
    }
  }
}

}  // namespace

void register_tokenizer(CLI::App& app) {
  CLI::App* group = app.add_subcommand("tokenizer", "Encode, decode, inspect and train byte-level BPE tokenizers");
  group->require_subcommand(1);

  auto enc = std::make_shared<Common>();
  auto enc_special = std::make_shared<bool>(false);
  auto enc_threads = std::make_shared<int>(0);
  auto enc_bos = std::make_shared<bool>(false);
  CLI::App* e = group->add_subcommand("encode", "Text to token ids (one line of ids per input)");
  add_common(e, *enc);
  e->add_flag("--jsonl", enc->jsonl, "Each input line is a JSON string; print one JSON array of ids per line");
  e->add_flag("--add-special-tokens", *enc_special, "Add the special tokens of tokenizer.json's post_processor (none for DeepSeek-V3 and Qwen3)");
  e->add_flag("--bos", *enc_bos, "Start with tokenizer_config.json's bos_token (as DeepSeek's add_bos_token asks)");
  e->add_option("--threads", *enc_threads, "Threads for --jsonl (0 = all)");
  e->callback([enc, enc_special, enc_bos, enc_threads] { run_encode(*enc, *enc_special, *enc_bos, *enc_threads); });

  auto dec = std::make_shared<Common>();
  auto skip = std::make_shared<bool>(false);
  CLI::App* d = group->add_subcommand("decode", "Token ids (space or comma separated) to text");
  add_common(d, *dec);
  d->add_flag("--jsonl", dec->jsonl, "Each input line is a JSON array of ids; print one JSON string per line");
  d->add_flag("--skip-special-tokens", *skip, "Leave special tokens out of the text");
  d->callback([dec, skip] { run_decode(*dec, *skip); });

  auto info_path = std::make_shared<std::string>();
  CLI::App* i = group->add_subcommand("info", "Summarize a tokenizer.json");
  i->add_option("--tokenizer", *info_path, "tokenizer.json")->required();
  i->callback([info_path] { run_info(*info_path); });

  struct ChatArgs {
    std::vector<std::string> files;
    std::string format = "deepseek-v3";
    bool no_generation_prompt = false;
  };
  auto chat = std::make_shared<ChatArgs>();
  CLI::App* c = group->add_subcommand("chat", "Render conversations (JSONL) in DeepSeek's chat format, one JSON string per line");
  c->add_option("--format", chat->format, "deepseek-v3 or deepseek-r1")->capture_default_str();
  c->add_flag("--no-generation-prompt", chat->no_generation_prompt, "Do not open an assistant turn at the end");
  c->add_option("files", chat->files, "Input files (default: stdin)");
  c->callback([chat] { run_chat(chat->files, chat->format, !chat->no_generation_prompt); });

  struct TrainArgs {
    std::vector<std::string> files;
    std::string out;
    tokenizer::TrainOptions options;
  };
  auto tr = std::make_shared<TrainArgs>();
  CLI::App* t = group->add_subcommand("train", "Learn byte-level BPE merges from text files");
  t->add_option("--vocab-size", tr->options.vocab_size, "Total vocabulary size, special tokens included")->required();
  t->add_option("--out", tr->out, "Where to write tokenizer.json")->required();
  t->add_option("--min-frequency", tr->options.min_frequency, "Skip pairs seen fewer times")->capture_default_str();
  t->add_option("--threads", tr->options.threads, "Threads for counting words (0 = all)");
  t->add_option("files", tr->files, "Training text files")->required();
  t->callback([tr] {
    TerminalProgress progress;
    tokenizer::TrainStats stats;
    std::string json = tokenizer::train_bpe(tr->files, tr->options, &progress, &stats);
    const std::filesystem::path out(tr->out);
    if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
    write_file_atomic(tr->out, json.data(), json.size());
    // tokenizer_config.json beside it names BOS/EOS/padding, so data preparation, training and
    // chat find them as they do in DeepSeek's own releases.
    nlohmann::json config = {{"add_bos_token", true}, {"add_eos_token", false},
                             {"bos_token", "<｜begin▁of▁sentence｜>"}, {"eos_token", "<｜end▁of▁sentence｜>"},
                             {"pad_token", "<｜▁pad▁｜>"}, {"model_max_length", 16384},
                             {"tokenizer_class", "LlamaTokenizerFast"}, {"legacy", true},
                             {"clean_up_tokenization_spaces", false}};
    const std::string config_text = config.dump(2) + "\n";
    write_file_atomic((out.parent_path() / "tokenizer_config.json").string(), config_text.data(), config_text.size());
    std::fprintf(stderr, "wrote %s: %d tokens (%d merges) from %.1f MB, %zu distinct words, %.2fs\n",
                 tr->out.c_str(), stats.vocab_size, stats.merges, double(stats.bytes) / 1e6,
                 stats.distinct_words, stats.seconds);
  });
}

}  // namespace whale::cli
