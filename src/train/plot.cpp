#include "train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"
#include "train/svg.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The numeric keys drawn; every other key of a line is ignored.
const char* const kScalarKeys[] = {
    "loss",   "val_loss", "mtp_loss",        "lr", "grad_norm",     "tokens_per_sec", "balance",
    "reward", "accuracy", "response_length", "kl", "clip_fraction", "entropy"};
constexpr size_t kScalarCount = sizeof kScalarKeys / sizeof kScalarKeys[0];

struct Record {
  int64_t step = 0;
  double values[kScalarCount];
  std::vector<double> balance_per_layer;
};

double number(const json& v, const std::string& where, const std::string& key) {
  if (v.is_null()) return NAN;  // nlohmann writes NaN and infinities as null
  if (!v.is_number())
    throw Error(where, "'" + key + "' is " + v.type_name() + " " + v.dump(-1).substr(0, 40) +
                           ", expected a number");
  return v.get<double>();
}

std::vector<double> numbers(const json& v, const std::string& where, const std::string& key) {
  if (!v.is_array())
    throw Error(where, "'" + key + "' is " + v.type_name() + ", expected an array of numbers");
  std::vector<double> out;
  out.reserve(v.size());
  for (const json& x : v) out.push_back(number(x, where, key));
  return out;
}

// "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
std::string parse_message(const json::parse_error& e) {
  std::string s = e.what();
  const size_t close = s.find("] ");
  return close == std::string::npos ? s : s.substr(close + 2);
}

}  // namespace

MetricsLog read_metrics_log(const std::string& path, std::vector<std::string>* warnings) {
  const std::string text = read_text_file(path);
  std::vector<Record> records;
  MetricsLog log;
  // A line that failed to parse is an error unless it turns out to be the last one and looks
  // cut off: no newline after it, or the parser ran out of input (a prefix of valid JSON).
  struct Failure {
    size_t line;
    std::string message;
    bool truncated;
  };
  std::vector<Failure> failed;
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool terminated = end != std::string::npos;
    if (!terminated) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    if (!failed.empty())
      throw Error(path + ":" + std::to_string(failed[0].line), failed[0].message);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      failed.push_back(
          {line_no, "not valid JSON: " + parse_message(e), !terminated || e.byte > line.size()});
      continue;
    }
    if (!j.is_object())
      throw Error(where, "expected a JSON object per line, got " + std::string(j.type_name()));
    const auto step = j.find("step");
    if (step == j.end()) throw Error(where, "no 'step' (every metrics line needs one)");
    if (!step->is_number() ||
        (step->is_number_float() && step->get<double>() != std::floor(step->get<double>())) ||
        step->get<double>() < 0)
      throw Error(where, "'step' is " + step->dump() + ", expected a non-negative integer");
    Record r;
    r.step = step->get<int64_t>();
    for (size_t k = 0; k < kScalarCount; ++k) {
      const auto it = j.find(kScalarKeys[k]);
      r.values[k] = it == j.end() ? NAN : number(*it, where, kScalarKeys[k]);
    }
    if (const auto it = j.find("balance_per_layer"); it != j.end() && !it->is_null())
      r.balance_per_layer = numbers(*it, where, "balance_per_layer");
    if (const auto it = j.find("expert_load"); it != j.end() && !it->is_null()) {
      if (!it->is_array())
        throw Error(where, "'expert_load' is " + std::string(it->type_name()) +
                               ", expected an array per MoE layer");
      std::vector<std::vector<double>> load;
      for (const json& layer : *it) load.push_back(numbers(layer, where, "expert_load"));
      // The last step's loads; on a repeated step the later line wins.
      if (r.step >= log.last_expert_load_step) {
        log.last_expert_load = std::move(load);
        log.last_expert_load_step = r.step;
      }
    }
    records.push_back(std::move(r));
  }
  if (!failed.empty()) {
    if (!failed[0].truncated)
      throw Error(path + ":" + std::to_string(failed[0].line), failed[0].message);
    warnings->push_back(path + ":" + std::to_string(failed[0].line) +
                        ": skipped a truncated last line (a run stopped mid-write)");
  }
  if (records.empty()) throw Error(path, "holds no complete metrics line yet");

  bool increasing = true;
  for (size_t i = 1; i < records.size(); ++i) increasing &= records[i].step > records[i - 1].step;
  if (!increasing) {
    std::stable_sort(records.begin(), records.end(),
                     [](const Record& a, const Record& b) { return a.step < b.step; });
    std::vector<Record> unique;
    for (auto& r : records) {
      if (!unique.empty() && unique.back().step == r.step)
        unique.back() = std::move(r);
      else
        unique.push_back(std::move(r));
    }
    warnings->push_back(
        path + ": " + std::to_string(records.size() - unique.size()) +
        " lines repeat an earlier step (a resumed run?); kept the later line of each step");
    records = std::move(unique);
  }
  for (size_t k = 0; k < kScalarCount; ++k) log.scalars[kScalarKeys[k]].reserve(records.size());
  for (const Record& r : records) {
    log.steps.push_back(r.step);
    for (size_t k = 0; k < kScalarCount; ++k) log.scalars[kScalarKeys[k]].push_back(r.values[k]);
    log.balance_per_layer.push_back(r.balance_per_layer);
  }
  return log;
}

namespace {

struct Curve {
  std::vector<double> x, y;  // finite points only
};

Curve curve(const MetricsLog& log, const std::string& key) {
  Curve c;
  const auto& values = log.scalars.at(key);
  for (size_t i = 0; i < values.size(); ++i)
    if (std::isfinite(values[i])) {
      c.x.push_back(double(log.steps[i]));
      c.y.push_back(values[i]);
    }
  return c;
}

// Exponential moving average with TensorBoard's bias correction, so the first points are not
// pulled toward zero: ema_t = (s * m_{t-1} + (1 - s) * y_t) / (1 - s^t).
std::vector<double> ema(const std::vector<double>& y, double s) {
  std::vector<double> out(y.size());
  double m = 0, weight = 1;
  for (size_t i = 0; i < y.size(); ++i) {
    m = s * m + (1 - s) * y[i];
    weight *= s;
    out[i] = m / (1 - weight);
  }
  return out;
}

// The raw curve, light and thin, under its EMA in the same colour.
void add_smoothed(std::vector<svg::Line>* lines, const Curve& c, const std::string& name,
                  const std::string& colour, double smooth, bool legend_raw) {
  svg::Line raw{name, c.x, c.y, colour, 1.5, 1.0, false, false};
  if (smooth <= 0) {
    lines->push_back(raw);
    return;
  }
  raw.width = 1;
  raw.opacity = 0.3;
  if (!legend_raw) raw.name.clear();
  lines->push_back(raw);
  char label[32];
  std::snprintf(label, sizeof label, " (EMA %.2g)", smooth);
  lines->push_back(
      {legend_raw ? name + label : name, c.x, ema(c.y, smooth), colour, 2.0, 1.0, false, false});
}

double last(const std::vector<double>& v) { return v.empty() ? NAN : v.back(); }

std::string step_range(const MetricsLog& log) {
  return std::to_string(log.steps.size()) + (log.steps.size() == 1 ? " step" : " steps") + " (" +
         std::to_string(log.steps.front()) + "\u2013" + std::to_string(log.steps.back()) + ")";
}

constexpr double kWidth = 800, kHeader = 56;

std::string loss_figure(const MetricsLog& log, const std::string& run, const PlotOptions& o) {
  const Curve train = curve(log, "loss"), val = curve(log, "val_loss"),
              mtp = curve(log, "mtp_loss");
  const Curve lr = curve(log, "lr"), grad = curve(log, "grad_norm");
  svg::Chart loss{
      "Loss", "step",  o.log_y ? "cross-entropy (nats, log scale)" : "cross-entropy (nats)",
      {},     o.log_y, true};
  add_smoothed(&loss.lines, train, "train", svg::kPalette[0], o.smooth, true);
  if (!mtp.x.empty())
    loss.lines.push_back({"MTP (EMA)", mtp.x, o.smooth > 0 ? ema(mtp.y, o.smooth) : mtp.y,
                          svg::kPalette[2], 1.5, 1.0, false, true});
  if (!val.x.empty())
    loss.lines.push_back({"validation", val.x, val.y, svg::kPalette[1], 2.0, 1.0, true, false});

  std::string subtitle = step_range(log);
  if (!train.y.empty())
    subtitle +=
        " \u00b7 last train loss " + svg::format_number(train.y.back()) +
        (o.smooth > 0 ? " (EMA " + svg::format_number(last(ema(train.y, o.smooth))) + ")" : "");
  if (!val.y.empty())
    subtitle += " \u00b7 validation " + svg::format_number(val.y.back()) + " at step " +
                std::to_string(int64_t(val.x.back())) + ", best " +
                svg::format_number(*std::min_element(val.y.begin(), val.y.end()));
  const bool small_row = !lr.x.empty() || !grad.x.empty();
  const double main_h = train.x.empty() && val.x.empty() && mtp.x.empty() ? 0 : 400, small_h = 210;
  svg::Document doc(kWidth, kHeader + main_h + (small_row ? small_h : 0) + 8);
  doc.title("Training \u00b7 " + run, subtitle);
  if (main_h > 0) doc.chart(loss, {0, kHeader, kWidth, main_h});
  std::vector<svg::Chart> small;
  if (!lr.x.empty())
    small.push_back({"Learning rate",
                     "step",
                     "",
                     {{"", lr.x, lr.y, svg::kPalette[2], 1.5, 1.0, false, false}},
                     false,
                     false});
  if (!grad.x.empty()) {
    svg::Chart g{"Gradient norm (before clipping)", "step", "", {}, false, false};
    add_smoothed(&g.lines, grad, "", svg::kPalette[3], o.smooth, false);
    small.push_back(g);
  }
  for (size_t i = 0; i < small.size(); ++i) {
    const double w = kWidth / double(small.size());
    doc.chart(small[i], {w * double(i), kHeader + main_h, w, small_h});
  }
  return doc.str();
}

std::string experts_figure(const MetricsLog& log, const std::string& run, const PlotOptions& o) {
  size_t layers = 0;
  for (const auto& b : log.balance_per_layer) layers = std::max(layers, b.size());
  svg::Chart chart{"Max / mean tokens per expert (1 = perfectly even)",
                   "step",
                   "max load / mean load",
                   {},
                   false,
                   true};
  const bool many = layers > size_t(svg::kPaletteSize - 2);
  for (size_t l = 0; l < layers; ++l) {
    Curve c;
    for (size_t i = 0; i < log.steps.size(); ++i)
      if (l < log.balance_per_layer[i].size() && std::isfinite(log.balance_per_layer[i][l])) {
        c.x.push_back(double(log.steps[i]));
        c.y.push_back(log.balance_per_layer[i][l]);
      }
    const std::string name = "MoE layer " + std::to_string(l);
    if (!many) {
      add_smoothed(&chart.lines, c, name, svg::kPalette[l], o.smooth, false);
    } else {
      // Too many layers for one colour each: an ordered colour map, EMA only, and the legend
      // names the first and the last layer.
      const bool named = l == 0 || l + 1 == layers;
      chart.lines.push_back({named ? name : "", c.x, o.smooth > 0 ? ema(c.y, o.smooth) : c.y,
                             svg::viridis(0.85 * double(l) / double(layers - 1)), 1.25, 0.9, false,
                             false});
    }
  }
  const Curve mean = curve(log, "balance");
  const bool dense = std::all_of(mean.y.begin(), mean.y.end(), [](double b) { return b == 1.0; });
  if (layers == 0 && !mean.x.empty() && !dense)
    add_smoothed(&chart.lines, mean, "mean over MoE layers", svg::kPalette[0], o.smooth, false);
  else if (many && !mean.x.empty())
    chart.lines.push_back({"mean", mean.x, o.smooth > 0 ? ema(mean.y, o.smooth) : mean.y, "#000000",
                           2, 1, false, true});
  const auto& load = log.last_expert_load;
  const bool heat = !load.empty() && !load[0].empty();
  if (chart.lines.empty() && !heat) return "";

  std::string subtitle = step_range(log);
  if (!mean.y.empty())
    subtitle +=
        " \u00b7 mean over MoE layers at the last step " + svg::format_number(mean.y.back());
  const double chart_h = chart.lines.empty() ? 0 : 340;
  const double cell_h = std::clamp(260.0 / double(std::max<size_t>(load.size(), 1)), 5.0, 26.0);
  const double heat_h = heat ? 30 + std::max(cell_h * double(load.size()), 120.0) + 40 : 0;
  svg::Document doc(kWidth, kHeader + chart_h + heat_h + 8);
  doc.title("Expert load \u00b7 " + run, subtitle);
  if (chart_h > 0) doc.chart(chart, {0, kHeader, kWidth, chart_h});
  if (heat)
    doc.heatmap({"Share of routed tokens at step " + std::to_string(log.last_expert_load_step) +
                     ", relative to uniform",
                 "expert", "MoE layer", load},
                {0, kHeader + chart_h + 6, kWidth, heat_h});
  return doc.str();
}

std::string throughput_figure(const MetricsLog& log, const std::string& run, const PlotOptions& o) {
  const Curve c = curve(log, "tokens_per_sec");
  if (c.y.empty()) return "";
  std::vector<double> sorted = c.y;
  std::nth_element(sorted.begin(), sorted.begin() + long(sorted.size() / 2), sorted.end());
  const std::string subtitle =
      step_range(log) + " \u00b7 median " + svg::format_number(sorted[sorted.size() / 2]) +
      " tokens/s \u00b7 last " + svg::format_number(c.y.back()) + " tokens/s";
  svg::Chart chart{"Training throughput", "step", "tokens / s", {}, false, false};
  add_smoothed(&chart.lines, c, "tokens/s", svg::kPalette[4], o.smooth, false);
  svg::Document doc(kWidth, kHeader + 380 + 8);
  doc.title("Throughput \u00b7 " + run, subtitle);
  doc.chart(chart, {0, kHeader, kWidth, 380});
  return doc.str();
}

std::string rl_figure(const MetricsLog& log, const std::string& run, const PlotOptions& o) {
  const std::pair<const char*, const char*> keys[] = {
      {"reward", "Reward"},
      {"accuracy", "Accuracy"},
      {"response_length", "Response length (tokens)"},
      {"kl", "KL to reference"},
      {"clip_fraction", "Clip fraction"},
      {"entropy", "Entropy (nats)"}};
  std::vector<svg::Chart> panels;
  for (const auto& [key, title] : keys) {
    const Curve c = curve(log, key);
    if (c.x.empty()) continue;
    svg::Chart chart{title, "step", "", {}, false, false};
    add_smoothed(&chart.lines, c, key, svg::kPalette[panels.size() % svg::kPaletteSize], o.smooth,
                 false);
    panels.push_back(chart);
  }
  if (panels.empty()) return "";
  const size_t columns = std::min<size_t>(3, panels.size()),
               rows = (panels.size() + columns - 1) / columns;
  const double w = kWidth / double(columns), h = 240;
  svg::Document doc(kWidth, kHeader + h * double(rows) + 8);
  doc.title("Reinforcement learning \u00b7 " + run, step_range(log));
  for (size_t i = 0; i < panels.size(); ++i)
    doc.chart(panels[i], {w * double(i % columns), kHeader + h * double(i / columns), w, h});
  return doc.str();
}

std::string index_html(const std::string& run, const std::vector<std::string>& svgs,
                       const std::vector<std::string>& warnings) {
  std::string html = "<!doctype html>\n<html lang=\"en\">\n<meta charset=\"utf-8\">\n<title>" +
                     svg::escape(run) +
                     " \u00b7 whale</title>\n<style>\n"
                     "body { font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; "
                     "background: #f6f6f6; }\n"
                     "img { display: block; max-width: 100%; margin: 0 0 24px; background: #fff; "
                     "box-shadow: 0 1px 4px #0002; }\n"
                     ".warning { color: #a33; }\n</style>\n<h1>" +
                     svg::escape(run) + "</h1>\n";
  for (const auto& w : warnings) html += "<p class=\"warning\">" + svg::escape(w) + "</p>\n";
  for (const auto& f : svgs)
    html += "<img src=\"" + svg::escape(f) + "\" alt=\"" + svg::escape(f) + "\">\n";
  return html;
}

}  // namespace

PlotReport plot_run(const std::string& run_dir, const PlotOptions& options) {
  if (!std::isfinite(options.smooth) || options.smooth < 0 || options.smooth >= 1)
    throw Error("--smooth", std::to_string(options.smooth) +
                                " is not an EMA factor (expected 0 <= smooth < 1)");
  if (!fs::is_directory(run_dir))
    throw Error(run_dir, "not a directory (expected a whale run directory)");
  const fs::path dir(run_dir);
  const fs::path metrics = dir / "metrics.jsonl";
  if (!fs::exists(metrics))
    throw Error(metrics.string(), "not found (whale pretrain writes it into its --out directory)");
  PlotReport report;
  const MetricsLog log = read_metrics_log(metrics.string(), &report.warnings);
  std::string run = fs::weakly_canonical(fs::absolute(dir)).filename().string();
  if (run.empty()) run = run_dir;

  std::vector<std::string> names;
  auto write = [&](const std::string& name, const std::string& text) {
    if (text.empty()) return;
    const std::string path = (dir / name).string();
    write_file_atomic(path, text.data(), text.size());
    report.files.push_back(path);
    names.push_back(name);
  };
  bool training = false;
  for (const char* key : {"loss", "val_loss", "mtp_loss", "lr", "grad_norm"})
    training |= !curve(log, key).x.empty();
  if (training) write("loss.svg", loss_figure(log, run, options));
  write("experts.svg", experts_figure(log, run, options));
  write("throughput.svg", throughput_figure(log, run, options));
  write("rl.svg", rl_figure(log, run, options));
  if (names.empty())
    report.warnings.push_back(metrics.string() +
                              ": no key that whale plot draws; no charts written");
  write("index.html", index_html(run, names, report.warnings));
  return report;
}

}  // namespace whale
