// The library reports long work through this interface; the CLI renders it (bar + ETA).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace whale {

class Progress {
 public:
  virtual ~Progress() = default;
  virtual void start(const std::string& label, int64_t total) = 0;
  virtual void update(int64_t done, const std::string& note = "") = 0;
  virtual void finish() = 0;
};

// Renders a one-line bar with rate and ETA on stderr, redrawn at most 10 times a second.
class TerminalProgress : public Progress {
 public:
  void start(const std::string& label, int64_t total) override;
  void update(int64_t done, const std::string& note = "") override;
  void finish() override;

 private:
  void draw(bool force);
  std::string label_, note_;
  int64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point begin_, last_draw_;
  bool is_tty_ = false;
};

}  // namespace whale
