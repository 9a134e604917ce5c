// whale chat: an interactive terminal chat over one KV cache (infer/chat_session.h).
// On a terminal it shows a prompt, dims R1's reasoning and colours nothing else; with stdin
// piped, every line is a user turn and stdout gets plain answers. Ctrl-C stops the answer being
// generated; at the prompt, a second Ctrl-C in a row exits.
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/util.h"
#include "core/error.h"
#include "infer/chat_session.h"
#include "io/checkpoint.h"

namespace whale::cli {
namespace {

std::atomic<int> g_interrupts{0};
static_assert(std::atomic<int>::is_always_lock_free);

void on_sigint(int) { g_interrupts.fetch_add(1); }

// SIGINT must reach the main thread, so that a read() blocked at the prompt returns EINTR:
// OpenMP's workers (created now, inheriting the mask) keep it blocked; only the main thread
// takes it. No SA_RESTART, for the same reason.
void install_sigint_handler() {
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, nullptr);
#pragma omp parallel
  { (void)omp_get_thread_num(); }
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
  pthread_sigmask(SIG_UNBLOCK, &block, nullptr);
}

// Lines from stdin through read(2), so that Ctrl-C at the prompt interrupts the wait.
class LineReader {
 public:
  enum class Result { Line, End, Interrupted };
  Result next(std::string& line) {
    while (true) {
      if (size_t nl = buf_.find('\n'); nl != std::string::npos) {
        line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return Result::Line;
      }
      if (end_) {
        if (buf_.empty()) return Result::End;
        line = std::move(buf_);
        buf_.clear();
        return Result::Line;
      }
      if (g_interrupts.load() > 0) return Result::Interrupted;
      char chunk[4096];
      ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;  // the loop checks the flag
      if (n <= 0) {
        end_ = true;
        continue;
      }
      buf_.append(chunk, size_t(n));
    }
  }

 private:
  std::string buf_;
  bool end_ = false;
};

struct Options {
  std::string model, system, format = "auto", attn = "auto", repack = "auto";
  int64_t max_tokens = 2048, context = 0;
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool hide_reasoning = false, no_color = false;
};

// Prints a turn's deltas: reasoning dimmed on a terminal, between <think> tags elsewhere.
class TurnPrinter {
 public:
  TurnPrinter(bool color, bool hide_reasoning) : color_(color), hide_(hide_reasoning) {}
  void print(const TextDelta& d) {
    if (!d.reasoning.empty()) {
      reasoning_chars_ += d.reasoning.size();
      if (!in_reasoning_ && (!hide_ || color_))
        out(hide_ ? "\x1b[2m(thinking...)\x1b[0m" : color_ ? "\x1b[2m" : "<think>\n");
      in_reasoning_ = true;
      if (!hide_) out(d.reasoning);
    }
    if (!d.content.empty()) {
      close_reasoning();
      out(d.content);
    }
    std::fflush(stdout);
  }
  void close_reasoning() {
    // Hidden reasoning showed only "(thinking...)" on a terminal: erase it.
    if (in_reasoning_ && hide_ && color_) out("\r\x1b[K");
    if (in_reasoning_ && !hide_) out(color_ ? "\x1b[0m\n\n" : "\n</think>\n\n");
    in_reasoning_ = false;
  }
  size_t reasoning_chars() const { return reasoning_chars_; }

 private:
  static void out(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }
  bool color_, hide_, in_reasoning_ = false;
  size_t reasoning_chars_ = 0;
};

const char* kHelp =
    "  /reset            forget the conversation (the system prompt stays)\n"
    "  /system [TEXT]    set the system prompt (empty: none); without TEXT, show it\n"
    "  /temperature X    sampling temperature (0 = greedy)\n"
    "  /save FILE        write the conversation as JSON messages\n"
    "  /load FILE        continue a saved conversation\n"
    "  /help             this list\n"
    "  /exit             leave (or Ctrl-D)\n"
    "  //text            send a line that starts with '/'\n"
    "Ctrl-C stops an answer; twice at the prompt, it exits.\n";

class ChatCli {
 public:
  ChatCli(const Options& opt, ChatSession& session, bool interactive, bool color)
      : opt_(opt), session_(session), interactive_(interactive), color_(color) {
    turn_.max_tokens = opt.max_tokens;
    turn_.sampling = opt.sampling;
    turn_.stop = opt.stop;
  }

  // Returns the number of input lines that failed (bad command, conversation too long).
  int run() {
    LineReader reader;
    bool warned = false;
    int failures = 0;
    std::string line;
    while (true) {
      if (interactive_) {
        std::fputs(color_ ? "\x1b[1m>>> \x1b[0m" : ">>> ", stdout);
        std::fflush(stdout);
      }
      LineReader::Result r = reader.next(line);
      if (r == LineReader::Result::Interrupted) {
        g_interrupts.store(0);
        if (warned) {
          std::fputs("\n", stdout);
          break;
        }
        std::fputs("\n(Ctrl-C again or Ctrl-D to exit)\n", stdout);
        warned = true;
        continue;
      }
      if (r == LineReader::Result::End) {
        if (interactive_) std::fputs("\n", stdout);
        break;
      }
      warned = false;
      if (line.empty()) continue;
      try {
        if (line[0] == '/' && !line.starts_with("//")) {
          if (!command(line)) break;
        } else {
          answer(line[0] == '/' ? line.substr(1) : line);
        }
      } catch (const Error& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        ++failures;
      }
    }
    std::fflush(stdout);
    return failures;
  }

 private:
  // Returns false for /exit.
  bool command(const std::string& line) {
    const size_t space = line.find(' ');
    const std::string name = line.substr(0, space);
    std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
    while (!arg.empty() && arg.back() == ' ') arg.pop_back();
    auto note = [&](const std::string& text) { std::fprintf(stderr, "%s\n", text.c_str()); };
    if (name == "/exit" || name == "/quit") return false;
    if (name == "/help") {
      std::fputs(kHelp, stderr);
    } else if (name == "/reset") {
      session_.reset();
      note("(conversation cleared)");
    } else if (name == "/system") {
      if (space == std::string::npos) {
        note(session_.system().empty() ? "(no system prompt)" : session_.system());
      } else {
        session_.set_system(arg);
        note(arg.empty() ? "(system prompt cleared)" : "(system prompt set)");
      }
    } else if (name == "/temperature") {
      char* end = nullptr;
      errno = 0;
      const float t = std::strtof(arg.c_str(), &end);
      if (arg.empty() || end != arg.c_str() + arg.size() || errno != 0)
        throw Error("/temperature", "\"" + arg + "\" is not a number");
      SamplingParams p = turn_.sampling;
      p.temperature = t;
      validate(p);
      turn_.sampling = p;
      note("(temperature " + std::to_string(t) + ")");
    } else if (name == "/save") {
      if (arg.empty()) throw Error("/save", "give a file name");
      save_chat_messages(arg, session_.messages());
      note("(saved " + std::to_string(session_.messages().size()) + " messages to " + arg + ")");
    } else if (name == "/load") {
      if (arg.empty()) throw Error("/load", "give a file name");
      session_.set_messages(load_chat_messages(arg));
      note("(loaded " + std::to_string(session_.messages().size()) + " messages from " + arg + ")");
    } else {
      throw Error(name, "unknown command; /help lists them");
    }
    return true;
  }

  void answer(const std::string& text) {
    TurnPrinter printer(color_, opt_.hide_reasoning);
    g_interrupts.store(0);
    ChatReply reply = session_.send(text, turn_, [&](const TextDelta& d) {
      printer.print(d);
      return g_interrupts.load() == 0;
    });
    g_interrupts.store(0);
    printer.close_reasoning();
    std::fputs("\n\n", stdout);
    std::fflush(stdout);
    const ChatTurnStats& s = reply.stats;
    std::string line;
    if (reply.finish == ChatFinish::Interrupted) line += "[stopped] ";
    if (reply.finish == ChatFinish::Length) line += "[max tokens reached] ";
    if (opt_.hide_reasoning && printer.reasoning_chars() > 0)
      line += "[reasoning hidden: " + std::to_string(printer.reasoning_chars()) + " bytes] ";
    char buf[256];
    std::snprintf(buf, sizeof buf, "prompt: %lld new tokens (+%lld from the cache), %.1f tok/s | answer: %lld tokens, %.1f tok/s",
                  (long long)s.prompt_tokens, (long long)s.reused_tokens, s.prompt_tokens_per_second(),
                  (long long)s.generated_tokens, s.decode_tokens_per_second());
    line += buf;
    std::fprintf(stderr, color_ ? "\x1b[2m%s\x1b[0m\n" : "%s\n", line.c_str());
  }

  const Options& opt_;
  ChatSession& session_;
  ChatTurnOptions turn_;
  bool interactive_, color_;
};

}  // namespace

void register_chat(CLI::App& app) {
  auto opt = std::make_shared<Options>();
  opt->sampling.temperature = 0.6f;  // DeepSeek's recommendation for R1
  opt->sampling.top_p = 0.95f;
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a model in the terminal (or one user turn per stdin line)");
  cmd->add_option("--model", opt->model, "Checkpoint directory with tokenizer.json, or a GGUF file")->required();
  cmd->add_option("--system", opt->system, "System prompt");
  cmd->add_option("--format", opt->format,
                  "Chat template: auto (R1 when tokenizer_config.json's template opens <think>), deepseek-v3 "
                  "or deepseek-r1")
      ->capture_default_str();
  cmd->add_option("--temperature", opt->sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", opt->sampling.top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  cmd->add_option("--top-k", opt->sampling.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--seed", opt->sampling.seed, "Sampling seed (turn k uses seed + k)")->capture_default_str();
  cmd->add_option("--max-tokens", opt->max_tokens, "Most tokens per answer")->capture_default_str();
  cmd->add_option("--context", opt->context, "KV cache size in tokens (default: max_position_embeddings, at most 4096)");
  cmd->add_option("--stop", opt->stop, "Stop an answer at this string (repeatable)");
  cmd->add_option("--attn", opt->attn, "Attention path: auto, absorb or naive")->capture_default_str();
  add_repack_option(cmd, &opt->repack);
  cmd->add_flag("--hide-reasoning", opt->hide_reasoning,
                "Collapse <think> reasoning: a terminal shows \"(thinking...)\" while it runs; its size is reported after");
  cmd->add_flag("--no-color", opt->no_color, "No ANSI colours even on a terminal (also: NO_COLOR=1)");
  cmd->callback([opt] {
    validate(opt->sampling);
    if (opt->max_tokens < 1) throw Error("--max-tokens", "must be at least 1");
    install_sigint_handler();
    auto model = load_model(opt->model);
    apply_repack(*model, opt->repack);
    std::unique_ptr<tokenizer::Tokenizer> tok = std::move(model->tokenizer);
    if (!tok) {
      const std::string path = (std::filesystem::path(model->source) / "tokenizer.json").string();
      if (!std::filesystem::exists(path)) throw Error(path, "whale chat needs the checkpoint's tokenizer.json");
      tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(path));
    }
    const tokenizer::ChatFormat format =
        opt->format == "auto" ? detect_chat_format(*tok) : tokenizer::parse_chat_format(opt->format);
    const int64_t context =
        opt->context > 0 ? opt->context : std::min<int64_t>(model->config.max_position_embeddings, 4096);
    ChatSession session(*model, *tok, format, context, parse_attention_mode(opt->attn));
    session.set_system(opt->system);

    const bool interactive = ::isatty(STDIN_FILENO);
    const bool color = ::isatty(STDOUT_FILENO) && !opt->no_color && std::getenv("NO_COLOR") == nullptr;
    if (interactive)
      std::fprintf(stderr, "whale chat: %s (%s, context %lld tokens). /help for commands, Ctrl-D to exit.\n",
                   opt->model.c_str(), format == tokenizer::ChatFormat::DeepSeekR1 ? "deepseek-r1" : "deepseek-v3",
                   (long long)context);
    ChatCli cli(*opt, session, interactive, color);
    const int failures = cli.run();
    if (failures > 0 && !interactive)
      throw Error("chat", std::to_string(failures) + " input line(s) failed (see the errors above)");
  });
}

}  // namespace whale::cli
