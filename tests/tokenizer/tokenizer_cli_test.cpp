// `whale tokenizer` end to end: --jsonl keeps order, files and stdin agree, errors exit 1.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace {

struct Result {
  std::string out;
  int status;
};

Result run(const std::string& args) {
  std::string cmd = std::string(WHALE_BINARY) + " tokenizer " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  Result r{"", -1};
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  r.status = pclose(pipe);
  return r;
}

const std::string kTok = "--tokenizer " WHALE_SOURCE_DIR "/data/tokenizers/deepseek_v3/tokenizer.json";

std::string temp_file(const std::string& name, const std::string& content) {
  std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(TokenizerCli, JsonlEncodeDecodeInOrder) {
  std::string in = temp_file("tok_cli_in.jsonl", "\"Hello, world!\"\n\"你好\"\n\"\"\n\"<｜User｜>hi\"\n");
  Result enc = run("encode --jsonl --threads 2 " + kTok + " " + in);
  ASSERT_EQ(enc.status, 0) << enc.out;
  EXPECT_EQ(enc.out, "[19923,14,2058,3]\n[30594]\n[]\n[128803,6366]\n");
  std::string ids = temp_file("tok_cli_ids.jsonl", enc.out);
  Result dec = run("decode --jsonl " + kTok + " " + ids);
  ASSERT_EQ(dec.status, 0) << dec.out;
  EXPECT_EQ(dec.out, "\"Hello, world!\"\n\"你好\"\n\"\"\n\"<｜User｜>hi\"\n");
}

TEST(TokenizerCli, StdinAndFileAgree) {
  std::string in = temp_file("tok_cli_plain.txt", "tabs\tand   spaces\n");
  Result from_file = run("encode " + kTok + " " + in);
  Result from_stdin = run("encode " + kTok + " < " + in);
  EXPECT_EQ(from_file.status, 0);
  EXPECT_EQ(from_file.out, from_stdin.out);
  Result bos = run("encode --bos " + kTok + " " + in);
  EXPECT_EQ(bos.out, "0 " + from_file.out);
}

TEST(TokenizerCli, ErrorsAreOneLineAndExitOne) {
  std::string bad = temp_file("tok_cli_bad.jsonl", "\"ok\"\nnot json\n");
  Result r = run("encode --jsonl " + kTok + " " + bad);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("line 2"), std::string::npos) << r.out;
  std::string broken = temp_file("tok_cli_broken.json", "{\"model\": {\"vocab\": {}, \"merges\": [\"a\"]}}");
  r = run("info --tokenizer " + broken);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("merges[0]"), std::string::npos) << r.out;
}

}  // namespace
