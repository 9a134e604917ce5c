#include "train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/mmap.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Okabe-Ito: distinguishable with colour-vision deficiencies.
const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"};

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::string colour;
  double width = 2.0, opacity = 1.0;
  bool markers = false;
};

std::string fmt(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e4) std::snprintf(buf, sizeof buf, "%.0fk", v / 1e3);
  else if (a >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else if (a >= 1) std::snprintf(buf, sizeof buf, "%.3g", v);
  else if (a >= 1e-2) std::snprintf(buf, sizeof buf, "%.3g", v);
  else std::snprintf(buf, sizeof buf, "%.1e", v);
  return buf;
}

// Ticks at 1-2-5 multiples covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return t;
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return o;
}

std::string line_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                       const std::vector<Series>& series, bool log_y) {
  const double W = 720, H = 420, L = 70, R = 170, T = 40, B = 50;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      const double y = log_y ? std::log10(s.y[i]) : s.y[i];
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << " " << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << W / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">" << escape(title)
    << "</text>\n";
  if (!std::isfinite(x0)) {
    o << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\">no data</text>\n</svg>\n";
    return o.str();
  }
  if (x1 == x0) x1 = x0 + 1;
  const double pad = (y1 - y0) * 0.05 + (y1 == y0 ? 0.5 : 0);
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
  o << "<g stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  for (double t : nice_ticks(x0, x1))
    o << "<line x1=\"" << px(t) << "\" y1=\"" << T << "\" x2=\"" << px(t) << "\" y2=\"" << H - B << "\"/>\n";
  const auto yt = nice_ticks(y0, y1);
  for (double t : yt) o << "<line x1=\"" << L << "\" y1=\"" << py(t) << "\" x2=\"" << W - R << "\" y2=\"" << py(t) << "\"/>\n";
  o << "</g>\n<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (double t : nice_ticks(x0, x1))
    o << "<text x=\"" << px(t) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << fmt(t) << "</text>\n";
  for (double t : yt)
    o << "<text x=\"" << L - 6 << "\" y=\"" << py(t) + 4 << "\" text-anchor=\"end\">" << fmt(log_y ? std::pow(10, t) : t)
      << "</text>\n";
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">" << escape(xlabel) << "</text>\n";
  o << "<text transform=\"translate(16," << (T + H - B) / 2 << ") rotate(-90)\" text-anchor=\"middle\">" << escape(ylabel)
    << "</text>\n";
  int legend = 0;
  for (const auto& s : series) {
    if (s.x.empty()) continue;
    o << "<polyline fill=\"none\" stroke=\"" << s.colour << "\" stroke-width=\"" << s.width << "\" stroke-opacity=\""
      << s.opacity << "\" points=\"";
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      o << px(s.x[i]) << "," << py(log_y ? std::log10(s.y[i]) : s.y[i]) << " ";
    }
    o << "\"/>\n";
    if (s.markers)
      for (size_t i = 0; i < s.x.size(); ++i)
        if (std::isfinite(s.y[i]))
          o << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(log_y ? std::log10(s.y[i]) : s.y[i]) << "\" r=\"3\" fill=\""
            << s.colour << "\"/>\n";
    const double ly = T + 10 + 18 * legend++;
    o << "<line x1=\"" << W - R + 12 << "\" y1=\"" << ly << "\" x2=\"" << W - R + 32 << "\" y2=\"" << ly << "\" stroke=\""
      << s.colour << "\" stroke-width=\"3\" stroke-opacity=\"" << std::max(s.opacity, 0.6) << "\"/>\n";
    o << "<text x=\"" << W - R + 38 << "\" y=\"" << ly + 4 << "\">" << escape(s.name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

std::string heatmap(const std::string& title, const std::vector<std::vector<double>>& rows) {
  const double cell = 18, L = 80, T = 50;
  size_t cols = 0;
  for (const auto& r : rows) cols = std::max(cols, r.size());
  const double W = std::max(480.0, L + cell * double(cols) + 40), H = T + cell * double(rows.size()) + 50;
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">" << escape(title)
    << "</text>\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    o << "<text x=\"" << L - 6 << "\" y=\"" << T + cell * double(r) + 13 << "\" text-anchor=\"end\">MoE layer " << r
      << "</text>\n";
    const double uniform = rows[r].empty() ? 1 : 1.0 / double(rows[r].size());
    for (size_t c = 0; c < rows[r].size(); ++c) {
      // load relative to uniform: 0 -> white, 1 -> light blue, >= 2 -> dark orange
      const double rel = std::min(2.0, rows[r][c] / uniform);
      int red, green, blue;
      if (rel <= 1) {
        red = int(255 - 170 * rel);
        green = int(255 - 75 * rel);
        blue = int(255 - 20 * rel);
      } else {
        const double k = rel - 1;
        red = int(85 + 128 * k);
        green = int(180 - 86 * k);
        blue = int(235 - 235 * k);
      }
      o << "<rect x=\"" << L + cell * double(c) << "\" y=\"" << T + cell * double(r) << "\" width=\"" << cell - 1
        << "\" height=\"" << cell - 1 << "\" fill=\"rgb(" << red << "," << green << "," << blue << ")\"><title>expert " << c
        << ": " << fmt(rows[r][c] * 100) << "% of tokens</title></rect>\n";
    }
  }
  o << "<text x=\"" << L << "\" y=\"" << H - 14 << "\">expert (colour: load vs uniform; white 0, blue 1x, orange 2x+)</text>\n";
  o << "</svg>\n";
  return o.str();
}

void write(const fs::path& path, const std::string& text, PlotReport* report) {
  write_file_atomic(path.string(), text.data(), text.size());
  report->files.push_back(path.string());
}

}  // namespace

PlotReport plot_run(const std::string& run_dir, const PlotOptions& options) {
  const fs::path metrics = fs::path(run_dir) / "metrics.jsonl";
  if (!fs::exists(metrics)) throw Error(metrics.string(), "not found: is this a whale run directory?");
  std::istringstream in(read_text_file(metrics.string()));
  std::vector<json> rows;
  std::string line;
  int64_t line_no = 0;
  std::vector<std::pair<int64_t, std::string>> bad;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    try {
      json j = json::parse(line);
      if (!j.contains("step") || !j["step"].is_number()) throw std::runtime_error("missing numeric 'step'");
      rows.push_back(std::move(j));
    } catch (const std::exception& e) {
      bad.push_back({line_no, e.what()});
    }
  }
  PlotReport report;
  if (!bad.empty()) {
    // A run killed mid-write leaves a truncated last line; anything else is an error.
    if (bad.size() == 1 && bad[0].first == line_no)
      report.warnings.push_back(metrics.string() + ": skipped a truncated last line " + std::to_string(line_no));
    else
      throw Error(metrics.string() + ":" + std::to_string(bad[0].first), "not a JSON metrics record: " + bad[0].second);
  }
  if (rows.empty()) throw Error(metrics.string(), "holds no metrics yet");
  auto series = [&](const std::string& key, const std::string& name, int colour) {
    Series s;
    s.name = name;
    s.colour = kPalette[colour % 8];
    for (const auto& r : rows)
      if (r.contains(key) && r[key].is_number()) {
        s.x.push_back(r["step"].get<double>());
        s.y.push_back(r[key].get<double>());
      }
    return s;
  };
  Series raw = series("loss", "train loss", 0);
  raw.opacity = 0.3;
  raw.width = 1;
  Series smooth = raw;
  smooth.name = "train (EMA)";
  smooth.opacity = 1;
  smooth.width = 2;
  double ema = smooth.y.empty() ? 0 : smooth.y[0];
  for (auto& y : smooth.y) y = ema = options.smooth * ema + (1 - options.smooth) * y;
  Series val = series("val_loss", "validation loss", 1);
  val.markers = true;
  std::vector<Series> loss_series{raw, smooth, val};
  Series mtp = series("mtp_loss", "MTP loss", 2);
  mtp.opacity = 0.7;
  if (!mtp.x.empty()) loss_series.push_back(mtp);
  write(fs::path(run_dir) / "loss.svg", line_chart("Loss", "step", "cross-entropy (nats)", loss_series, options.log_y),
        &report);
  write(fs::path(run_dir) / "lr.svg", line_chart("Learning rate", "step", "lr", {series("lr", "lr", 2)}, false), &report);
  write(fs::path(run_dir) / "throughput.svg",
        line_chart("Throughput", "step", "tokens / s", {series("tokens_per_sec", "tokens/s", 4)}, false), &report);
  std::vector<Series> balance;
  for (const auto& r : rows)
    if (r.contains("balance_per_layer") && r["balance_per_layer"].is_array())
      for (size_t l = 0; l < r["balance_per_layer"].size(); ++l) {
        if (balance.size() <= l) {
          Series s;
          s.name = "MoE layer " + std::to_string(l);
          s.colour = kPalette[l % 8];
          s.width = 1.5;
          balance.push_back(s);
        }
        balance[l].x.push_back(r["step"].get<double>());
        balance[l].y.push_back(r["balance_per_layer"][l].get<double>());
      }
  if (!balance.empty())
    write(fs::path(run_dir) / "experts.svg",
          line_chart("Expert balance (max load / mean load)", "step", "max / mean", balance, false), &report);
  for (auto it = rows.rbegin(); it != rows.rend(); ++it)
    if (it->contains("expert_load") && (*it)["expert_load"].is_array()) {
      std::vector<std::vector<double>> loads;
      for (const auto& layer : (*it)["expert_load"]) {
        loads.emplace_back();
        for (const auto& v : layer) loads.back().push_back(v.get<double>());
      }
      write(fs::path(run_dir) / "expert_load.svg",
            heatmap("Expert load at step " + std::to_string((*it)["step"].get<int64_t>()), loads), &report);
      break;
    }
  std::vector<std::string> rl_keys{"reward", "accuracy", "response_length", "kl", "clip_fraction", "entropy"};
  int colour = 0;
  for (const auto& key : rl_keys) {
    Series s = series(key, key, colour++);
    if (!s.x.empty()) write(fs::path(run_dir) / ("rl_" + key + ".svg"), line_chart(key, "step", key, {s}, false), &report);
  }
  std::string html = "<!doctype html><meta charset=utf-8><title>whale run</title><body style=\"font-family:sans-serif\">\n";
  html += "<h2>" + escape(run_dir) + "</h2>\n";
  for (const auto& f : report.files) html += "<img src=\"" + fs::path(f).filename().string() + "\"><br>\n";
  write(fs::path(run_dir) / "index.html", html, &report);
  return report;
}

}  // namespace whale
