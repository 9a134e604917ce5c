#include "core/progress.h"

#include <unistd.h>

namespace whale {

void TerminalProgress::start(const std::string& label, int64_t total) {
  label_ = label;
  total_ = total;
  done_ = 0;
  begin_ = last_draw_ = std::chrono::steady_clock::now();
  is_tty_ = ::isatty(2);
  draw(true);
}

void TerminalProgress::update(int64_t done, const std::string& note) {
  done_ = done;
  note_ = note;
  draw(false);
}

void TerminalProgress::finish() {
  draw(true);
  std::fputc('\n', stderr);
}

void TerminalProgress::draw(bool force) {
  auto now = std::chrono::steady_clock::now();
  double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (!force && since_draw < (is_tty_ ? 0.1 : 5.0)) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - begin_).count();
  double fraction = total_ > 0 ? double(done_) / double(total_) : 0.0;
  double eta = (fraction > 0 && fraction < 1) ? elapsed * (1 - fraction) / fraction : 0.0;
  const int width = 30;
  int filled = int(fraction * width + 0.5);
  std::string bar(size_t(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %5.1f%% %.1fs eta %.1fs %s%s", is_tty_ ? "\r" : "",
               label_.c_str(), bar.c_str(), (long long)done_, (long long)total_, 100 * fraction,
               elapsed, eta, note_.c_str(), is_tty_ ? "\x1b[K" : "\n");
  std::fflush(stderr);
}

}  // namespace whale
