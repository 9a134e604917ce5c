// `whale chat` as a process on a tiny random checkpoint: piped turns (output structure, exit
// code, no ANSI), /save then /load continuing exactly as one run would, bad commands, and
// Ctrl-C under a pseudo-terminal stopping the answer but not the program.
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct ChatRun {
  int code = -1;
  std::string out, err;
};

class ChatCli : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::TempDir() + "/whale_chat_cli_" + std::to_string(::getpid()));
    fs::create_directories(*dir_);
    {
      std::ofstream corpus(*dir_ + "/corpus.txt");
      for (int i = 0; i < 40; ++i) corpus << "hello there, how are you? I am fine. The cat sat on the mat.\n";
    }
    // The tiny config with room for a long answer (the Ctrl-C test needs one to interrupt).
    nlohmann::json config = nlohmann::json::parse(read_file(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json"));
    config["max_position_embeddings"] = 8192;
    std::ofstream(*dir_ + "/config.json") << config.dump();
    const std::string bin = WHALE_BINARY, d = *dir_;
    ASSERT_EQ(std::system((bin + " tokenizer train --vocab-size 320 --out " + d + "/tok/tokenizer.json " + d +
                           "/corpus.txt 2>/dev/null")
                              .c_str()),
              0);
    ASSERT_EQ(std::system((bin + " init --config " + d + "/config.json --seed 1 --out " + d + "/ckpt --tokenizer " + d +
                           "/tok/tokenizer.json >/dev/null 2>&1")
                              .c_str()),
              0);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  // Runs `whale chat --model CKPT args` with `input` on stdin.
  static ChatRun chat(const std::string& input, const std::string& args) {
    return whale("chat --model " + *dir_ + "/ckpt " + args, input);
  }
  static ChatRun whale(const std::string& args, const std::string& input) {
    const std::string d = *dir_;
    std::ofstream(d + "/in.txt") << input;
    ChatRun r;
    int status = std::system((std::string(WHALE_BINARY) + " " + args + " < " + d + "/in.txt > " + d +
                              "/out.txt 2> " + d + "/err.txt")
                                 .c_str());
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_file(d + "/out.txt");
    r.err = read_file(d + "/err.txt");
    return r;
  }

  static std::string* dir_;
};

std::string* ChatCli::dir_ = nullptr;

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// Seeded sampling: reproducible (turn k uses seed + k), and livelier than the tiny model's greedy
// answers, which are often nothing but special tokens.
const char* kSeeded = "--temperature 1 --seed 1 --max-tokens 12 --system 'Be brief.'";

TEST_F(ChatCli, PipedLinesAreTurnsAndSaveWritesTheConversation) {
  const std::string saved = *dir_ + "/saved.json";
  ChatRun r = chat("hello\nhow are you?\n\n/save " + saved + "\n", kSeeded);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "no ANSI when stdout is not a terminal";
  EXPECT_EQ(count(r.err, "prompt: "), 2u) << r.err;  // one speed line per answer
  EXPECT_EQ(count(r.err, "tok/s"), 4u) << r.err;
  EXPECT_NE(r.err.find("from the cache"), std::string::npos);
  // The conversation as saved: the system prompt, then user and assistant in turn; stdout
  // holds exactly the two answers, each followed by a blank line.
  nlohmann::json j = nlohmann::json::parse(read_file(saved));
  ASSERT_EQ(j.size(), 5u) << j.dump();
  const std::vector<std::string> roles = {"system", "user", "assistant", "user", "assistant"};
  for (size_t i = 0; i < roles.size(); ++i) EXPECT_EQ(j[i]["role"], roles[i]);
  EXPECT_EQ(j[1]["content"], "hello");
  EXPECT_EQ(j[3]["content"], "how are you?");
  EXPECT_EQ(r.out, j[2]["content"].get<std::string>() + "\n\n" + j[4]["content"].get<std::string>() + "\n\n");
}

TEST_F(ChatCli, LoadContinuesAsOneRunWould) {
  const std::string saved = *dir_ + "/two_turns.json";
  ChatRun whole = chat("hello\nhow are you?\nThe cat\n", kSeeded);
  ASSERT_EQ(whole.code, 0) << whole.err;
  ChatRun first = chat("hello\nhow are you?\n/save " + saved + "\n", kSeeded);
  ASSERT_EQ(first.code, 0) << first.err;
  ChatRun resumed = chat("/load " + saved + "\nThe cat\n", "--temperature 1 --seed 1 --max-tokens 12");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("loaded 5 messages"), std::string::npos) << resumed.err;
  EXPECT_EQ(first.out + resumed.out, whole.out);
}

TEST_F(ChatCli, BadCommandsAreReportedAndTheChatGoesOn) {
  ChatRun r = chat("/temperature warm\n/load " + *dir_ + "/missing.json\n/frobnicate\n/temperature 0\nhello\n",
               "--max-tokens 4");
  EXPECT_EQ(r.code, 1) << "failed lines make a non-zero exit when piped";
  EXPECT_NE(r.err.find("/temperature: \"warm\" is not a number"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("missing.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/frobnicate: unknown command"), std::string::npos) << r.err;
  EXPECT_EQ(count(r.err, "prompt: "), 1u) << "the turn after the errors still ran: " << r.err;
  ChatRun help = chat("/help\n/exit\nhello\n", "--max-tokens 4");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.err.find("/reset"), std::string::npos);
  EXPECT_EQ(count(help.err, "prompt: "), 0u) << "/exit leaves before the next line";
}

TEST_F(ChatCli, R1ReasoningIsSetApartOrHidden) {
  // R1's generation prompt opens "<think>", so what the tiny model says is reasoning until it
  // writes "</think>" (it never does within a few tokens).
  ChatRun shown = chat("hello\n", "--format deepseek-r1 --temperature 1 --seed 1 --max-tokens 12");
  ASSERT_EQ(shown.code, 0) << shown.err;
  EXPECT_TRUE(shown.out.starts_with("<think>\n")) << shown.out;
  EXPECT_NE(shown.out.find("\n</think>\n\n"), std::string::npos) << shown.out;
  ChatRun hidden = chat("hello\n", "--format deepseek-r1 --temperature 1 --seed 1 --max-tokens 12 --hide-reasoning");
  ASSERT_EQ(hidden.code, 0) << hidden.err;
  EXPECT_EQ(hidden.out, "\n\n");
  EXPECT_NE(hidden.err.find("[reasoning hidden: "), std::string::npos) << hidden.err;
}

// whale generate --prompt streams through TextStream: its text is what decoding the same run's
// ids all at once gives (special tokens left out).
TEST_F(ChatCli, GeneratePromptStreamsTheDecodedText) {
  const whale::tokenizer::Tokenizer tok = whale::tokenizer::Tokenizer::from_file(*dir_ + "/ckpt/tokenizer.json");
  std::string ids;
  for (int id : tok.encode("hello there", true)) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const std::string common = "generate --model " + *dir_ + "/ckpt --max-tokens 40 --temperature 1 --seed 3 --quiet ";
  ChatRun text = whale(common + "--prompt 'hello there'", "");
  ChatRun numbers = whale(common + "--prompt-tokens " + ids, "");
  ASSERT_EQ(text.code, 0) << text.err;
  ASSERT_EQ(numbers.code, 0) << numbers.err;
  std::vector<int> generated;
  std::istringstream in(numbers.out);
  for (int id; in >> id;) generated.push_back(id);
  ASSERT_EQ(generated.size(), 40u) << numbers.out;
  const std::string want = tok.decode(generated, /*skip_special_tokens=*/true);
  ASSERT_EQ(want.find("<think>"), std::string::npos) << "this seed gives no reasoning block";
  EXPECT_EQ(text.out, want + "\n");
  EXPECT_NE(text.out.find("\xEF\xBF\xBD"), std::string::npos) << "the case of interest: ill-formed bytes";
}

// Reads the pty until `what` appears (returns everything read) or the deadline passes.
bool read_until(int fd, const std::string& what, std::string& seen, double seconds = 60) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (seen.find(what) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return seen.find(what) != std::string::npos;
    seen.append(buf, size_t(n));
  }
  return true;
}

TEST_F(ChatCli, CtrlCStopsTheAnswerNotTheProgram) {
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string model = *dir_ + "/ckpt";
    // An answer as long as the context: far longer than the time it takes to interrupt it.
    ::execl(WHALE_BINARY, WHALE_BINARY, "chat", "--model", model.c_str(), "--temperature", "0", "--max-tokens",
            "100000", "--context", "8192", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  auto fail = [&](const std::string& why, const std::string& seen) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(master);
    FAIL() << why << "; the terminal showed:\n" << seen;
  };
  std::string seen;
  if (!read_until(master, ">>> ", seen)) return fail("no prompt", seen);
  EXPECT_NE(seen.find("\x1b[1m>>> "), std::string::npos) << "a terminal gets ANSI styling";
  seen.clear();
  ASSERT_EQ(::write(master, "hello\n", 6), 6);
  // Wait for the answer to start streaming (past the echoed line), then press Ctrl-C.
  if (!read_until(master, "hello\r\n", seen)) return fail("no echo", seen);
  const size_t echoed = seen.find("hello\r\n") + 7;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (seen.size() <= echoed + 8 && std::chrono::steady_clock::now() < deadline) read_until(master, "\x01", seen, 0.1);
  ASSERT_EQ(::write(master, "\x03", 1), 1);
  if (!read_until(master, "[stopped]", seen)) return fail("Ctrl-C did not stop the answer", seen);
  if (!read_until(master, ">>> ", seen)) return fail("no prompt after Ctrl-C", seen);
  seen.clear();
  // Still alive and listening.
  const std::string cmd = "/temperature 0.5\n";
  ASSERT_EQ(::write(master, cmd.data(), cmd.size()), ssize_t(cmd.size()));
  if (!read_until(master, "(temperature 0.5", seen)) return fail("no answer to a command after Ctrl-C", seen);
  if (!read_until(master, ">>> ", seen)) return fail("no prompt", seen);
  // Ctrl-C at the prompt warns; a second one exits cleanly.
  ASSERT_EQ(::write(master, "\x03", 1), 1);
  if (!read_until(master, "Ctrl-C again", seen)) return fail("no warning for Ctrl-C at the prompt", seen);
  ASSERT_EQ(::write(master, "\x03", 1), 1);
  int status = 0;
  pid_t done = 0;
  const auto exit_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < exit_deadline) {
    read_until(master, "\x01", seen, 0.1);  // keep draining so the child never blocks on output
    ::usleep(20000);
  }
  if (done != pid) return fail("a second Ctrl-C did not exit", seen);
  ::close(master);
  EXPECT_TRUE(WIFEXITED(status)) << seen;
  EXPECT_EQ(WEXITSTATUS(status), 0) << seen;
}

}  // namespace
