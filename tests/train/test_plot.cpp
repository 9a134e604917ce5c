// whale plot: synthetic metrics.jsonl -> SVGs. Checks the files are well-formed, that each
// curve has a point per step, that axis ticks bracket the data and that bad input names its
// line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/mmap.h"
#include "train/plot.h"
#include "train/svg.h"

using namespace whale;
namespace fs = std::filesystem;

namespace {

constexpr int kSteps = 50;

double train_loss(int s) { return 2.0 + 6.0 * std::exp(-s / 15.0) + 0.1 * std::sin(s * 1.7); }

// 50 steps; val_loss every 10; 3 MoE layers x 8 experts; then `tail` (by default a last line
// cut off mid-write, without its newline).
std::string make_run(const std::string& name,
                     const std::string& tail = "{\"step\":51,\"loss\":3.") {
  const fs::path dir = fs::path(::testing::TempDir()) / ("whale_plot_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream out(dir / "metrics.jsonl");
  for (int s = 1; s <= kSteps; ++s) {
    const double skew = std::exp(-s / 10.0);  // routing evens out over the run
    out << "{\"step\":" << s << ",\"loss\":" << train_loss(s)
        << ",\"total_loss\":9,\"lr\":" << 1e-3 * std::min(1.0, s / 10.0)
        << ",\"grad_norm\":" << 1.0 + skew << ",\"tokens_per_sec\":" << 1500 + 50 * std::sin(s)
        << ",\"balance\":" << 1 + skew << ",\"balance_per_layer\":[" << 1 + 2 * skew << ","
        << 1 + skew << "," << 1.1 << "],\"expert_load\":[";
    for (int l = 0; l < 3; ++l) {
      out << (l ? ",[" : "[");
      for (int e = 0; e < 8; ++e) out << (e ? "," : "") << (l == 2 ? (e == 0 ? 0.3 : 0.1) : 0.125);
      out << "]";
    }
    out << "]";
    if (s % 10 == 0) out << ",\"val_loss\":" << train_loss(s) + 0.3;
    out << "}\n";
  }
  out << tail;
  return dir.string();
}

std::string read(const std::string& path) { return read_text_file(path); }

// Balanced tags, one root <svg>, no stray '<' or '&' in text: enough XML to catch a broken file.
::testing::AssertionResult well_formed(const std::string& doc) {
  std::vector<std::string> open;
  int roots = 0;
  for (size_t i = 0; i < doc.size(); ++i) {
    if (doc[i] == '&') {
      const size_t semi = doc.find(';', i);
      if (semi == std::string::npos || semi - i > 8)
        return ::testing::AssertionFailure() << "bare & at " << i;
      continue;
    }
    if (doc[i] != '<') continue;
    const size_t close = doc.find('>', i);
    if (close == std::string::npos) return ::testing::AssertionFailure() << "unclosed tag at " << i;
    std::string tag = doc.substr(i + 1, close - i - 1);
    if (tag.find('<') != std::string::npos)
      return ::testing::AssertionFailure() << "'<' inside tag at " << i;
    if (std::count(tag.begin(), tag.end(), '"') % 2)
      return ::testing::AssertionFailure() << "odd quotes: " << tag;
    i = close;
    if (tag.empty() || tag[0] == '!' || tag[0] == '?') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name)
        return ::testing::AssertionFailure()
               << "</" << name << "> closes <" << (open.empty() ? "" : open.back()) << ">";
      open.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \n/"));
    if (open.empty()) ++roots;
    if (tag.back() != '/') open.push_back(name);
  }
  if (!open.empty()) return ::testing::AssertionFailure() << "<" << open.back() << "> never closed";
  if (roots != 1) return ::testing::AssertionFailure() << roots << " root elements";
  return ::testing::AssertionSuccess();
}

// The part of an SVG inside <g class="chart" data-title="title">.
std::string chart(const std::string& doc, const std::string& title) {
  const size_t begin = doc.find("<g class=\"chart\" data-title=\"" + title + "\"");
  if (begin == std::string::npos) return "";
  return doc.substr(begin, doc.find("\n</g>", begin) - begin);
}

size_t count(const std::string& doc, const std::string& what) {
  size_t n = 0;
  for (size_t at = doc.find(what); at != std::string::npos; at = doc.find(what, at + what.size()))
    ++n;
  return n;
}

// Points (M and L commands) of the first path with data-name="name". (std::regex recurses
// per character and overflows the stack on a long path, so plain find.)
size_t points(const std::string& doc, const std::string& name) {
  const size_t at = doc.find("data-name=\"" + name + "\"");
  if (at == std::string::npos) return 0;
  const size_t begin = doc.find(" d=\"", at) + 4, end = doc.find('"', begin);
  if (doc.find('>', at) < begin) return 0;
  const std::string d = doc.substr(begin, end - begin);
  return size_t(std::count(d.begin(), d.end(), 'M') + std::count(d.begin(), d.end(), 'L'));
}

std::vector<double> ticks(const std::string& doc, const std::string& axis) {
  std::vector<double> out;
  const std::string key = "class=\"tick " + axis + "\" data-value=\"";
  for (size_t at = doc.find(key); at != std::string::npos; at = doc.find(key, at + 1))
    out.push_back(std::stod(doc.substr(at + key.size())));
  return out;
}

}  // namespace

TEST(Plot, WritesEveryChartAndSkipsTruncatedLastLine) {
  const std::string dir = make_run("ok");
  const PlotReport r = plot_run(dir, {});
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("metrics.jsonl:51"), std::string::npos) << r.warnings[0];
  std::vector<std::string> names;
  for (const auto& f : r.files) names.push_back(fs::path(f).filename().string());
  EXPECT_EQ(names,
            (std::vector<std::string>{"loss.svg", "experts.svg", "throughput.svg", "index.html"}));
  for (const auto& f : r.files)
    if (f.ends_with(".svg")) {
      EXPECT_TRUE(well_formed(read(f))) << f;
    }
  const std::string html = read(dir + "/index.html");
  for (const char* svg : {"loss.svg", "experts.svg", "throughput.svg"})
    EXPECT_NE(html.find(std::string("src=\"") + svg + "\""), std::string::npos) << svg;
  EXPECT_FALSE(fs::exists(dir + "/rl.svg"));  // no RL keys in this run
}

TEST(Plot, CurvesHaveAPointPerStep) {
  const std::string dir = make_run("points");
  plot_run(dir, {});
  const std::string loss = read(dir + "/loss.svg");
  EXPECT_EQ(points(loss, "train"), size_t(kSteps));
  EXPECT_EQ(points(loss, "train (EMA 0.9)"), size_t(kSteps));
  EXPECT_EQ(points(loss, "validation"), size_t(kSteps / 10));
  const std::string val_chart = chart(loss, "Loss");
  EXPECT_EQ(count(val_chart, "<circle"),
            size_t(kSteps / 10 + 1));  // five markers and one in the legend
  const std::string experts = read(dir + "/experts.svg");
  for (int l = 0; l < 3; ++l)
    EXPECT_EQ(points(experts, "MoE layer " + std::to_string(l)), size_t(kSteps)) << l;
  // Heatmap: a cell per layer and expert, the skewed expert (0.3 of 8 experts: 2.4x) named.
  EXPECT_EQ(count(experts, "<title>MoE layer "), 24u);
  EXPECT_NE(experts.find("MoE layer 2, expert 0: 30% (2.4x uniform)"), std::string::npos);
  EXPECT_NE(experts.find("at step 50"), std::string::npos);
  EXPECT_EQ(points(read(dir + "/throughput.svg"), ""), size_t(kSteps));
}

TEST(Plot, TicksBracketTheData) {
  const std::string dir = make_run("ticks");
  double lo = 1e9, hi = -1e9;
  for (int s = 1; s <= kSteps; ++s) {
    lo = std::min(lo, train_loss(s));
    hi = std::max(hi, train_loss(s) + (s % 10 == 0 ? 0.3 : 0));
  }
  for (bool log_y : {false, true}) {
    PlotOptions o;
    o.log_y = log_y;
    plot_run(dir, o);
    const std::string loss = chart(read(dir + "/loss.svg"), "Loss");
    const std::vector<double> y = ticks(loss, "ytick"), x = ticks(loss, "xtick");
    ASSERT_GE(y.size(), 3u) << "log " << log_y;
    EXPECT_LE(y.front(), lo) << "log " << log_y;
    EXPECT_GE(y.back(), hi) << "log " << log_y;
    ASSERT_GE(x.size(), 3u);
    EXPECT_LE(x.front(), 1);
    EXPECT_GE(x.back(), kSteps);
  }
  const std::string lr = chart(read(dir + "/loss.svg"), "Learning rate");
  const std::vector<double> y = ticks(lr, "ytick");
  ASSERT_FALSE(y.empty());
  EXPECT_LE(y.front(), 1e-4);
  EXPECT_GE(y.back(), 1e-3);
  EXPECT_NE(lr.find(">1e-3</text>"), std::string::npos);  // small numbers in short form
}

TEST(Plot, NiceScales) {
  // 1-2-5 steps, at most max_ticks, bracketing [lo, hi] on many ranges.
  for (double lo : {-3.7, 0.0, 1.0, 2.31, 1e-5, 417.0})
    for (double span : {1e-6, 0.013, 0.9, 7.0, 350.0, 1.2e6})
      for (int max_ticks : {2, 5, 9}) {
        const svg::Scale s = svg::nice_scale(lo, lo + span, false, max_ticks);
        ASSERT_LE(int(s.ticks.size()), max_ticks);
        EXPECT_LE(s.ticks.front(), lo + s.step * 1e-6) << lo << " " << span;
        EXPECT_GE(s.ticks.back(), lo + span - s.step * 1e-6) << lo << " " << span;
        const double m = s.step / std::pow(10.0, std::floor(std::log10(s.step) + 1e-9));
        EXPECT_TRUE(std::fabs(m - 1) < 1e-6 || std::fabs(m - 2) < 1e-6 || std::fabs(m - 5) < 1e-6)
            << m;
        const auto labels = svg::tick_labels(s);
        EXPECT_EQ(std::set<std::string>(labels.begin(), labels.end()).size(), labels.size())
            << lo << " " << span;
      }
  const svg::Scale lg = svg::nice_scale(1e-5, 3e-3, true, 8);
  EXPECT_LE(lg.lo, 1e-5);
  EXPECT_GE(lg.hi, 3e-3);
  EXPECT_LE(lg.ticks.size(), 8u);
  const svg::Scale one_decade = svg::nice_scale(3.9, 8.4, true, 10);  // a loss curve: 4..9
  EXPECT_EQ(one_decade.ticks.front(), 3);
  EXPECT_EQ(one_decade.ticks.back(), 9);
}

TEST(Plot, NumberFormats) {
  EXPECT_EQ(svg::format_number(0), "0");
  EXPECT_EQ(svg::format_number(4.381), "4.38");
  EXPECT_EQ(svg::format_number(1234), "1.23k");
  EXPECT_EQ(svg::format_number(15300), "15.3k");
  EXPECT_EQ(svg::format_number(2.5e6), "2.5M");
  EXPECT_EQ(svg::format_number(3.4e-4), "3.4e-4");
  EXPECT_EQ(svg::format_number(-0.25), "-0.25");
  svg::Scale s = svg::nice_scale(0, 2000, false, 5);
  EXPECT_EQ(svg::tick_labels(s), (std::vector<std::string>{"0", "500", "1k", "1.5k", "2k"}));
  s = svg::nice_scale(4, 5, false, 3);
  EXPECT_EQ(svg::tick_labels(s), (std::vector<std::string>{"4.0", "4.5", "5.0"}));
  s = svg::nice_scale(0, 1e-3, false, 6);
  EXPECT_EQ(svg::tick_labels(s),
            (std::vector<std::string>{"0", "2e-4", "4e-4", "6e-4", "8e-4", "1e-3"}));
}

namespace {
std::string error_of(const std::string& dir) {
  try {
    plot_run(dir, {});
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST(Plot, MalformedLinesNameTheLine) {
  // Garbage in the middle: an error naming file and line, even though later lines are fine.
  std::string dir = make_run("bad_middle", "not json\n{\"step\":52,\"loss\":1}\n");
  EXPECT_NE(error_of(dir).find("metrics.jsonl:51: not valid JSON"), std::string::npos)
      << error_of(dir);
  // A complete last line that is not JSON is garbage too, not a truncation.
  dir = make_run("bad_last", "{\"step\":51,\"loss\":1}x\n");
  EXPECT_NE(error_of(dir).find("metrics.jsonl:51"), std::string::npos) << error_of(dir);
  // Known keys are checked.
  dir = make_run("bad_type", "{\"step\":51,\"loss\":\"low\"}\n");
  EXPECT_NE(error_of(dir).find("metrics.jsonl:51: 'loss' is string"), std::string::npos)
      << error_of(dir);
  dir = make_run("no_step", "{\"loss\":1}\n");
  EXPECT_NE(error_of(dir).find("metrics.jsonl:51: no 'step'"), std::string::npos) << error_of(dir);
  dir = make_run("bad_load", "{\"step\":51,\"expert_load\":[[0.5,\"x\"]]}\n");
  EXPECT_NE(error_of(dir).find("metrics.jsonl:51: 'expert_load'"), std::string::npos)
      << error_of(dir);
  EXPECT_NE(error_of(dir + "/nowhere").find("not a directory"), std::string::npos);
  PlotOptions o;
  o.smooth = 1.0;
  EXPECT_THROW(plot_run(make_run("smooth"), o), Error);
}

TEST(Plot, NullsAndRepeatedStepsFromAResumedRun) {
  // Steps 41..50 logged again after a resume: the later lines win; null (NaN) leaves a gap.
  std::string tail;
  for (int s = 41; s <= kSteps; ++s)
    tail += "{\"step\":" + std::to_string(s) + ",\"loss\":" + (s == 45 ? "null" : "2.5") + "}\n";
  const std::string dir = make_run("resumed", tail);
  const PlotReport r = plot_run(dir, {});
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("10 lines repeat"), std::string::npos) << r.warnings[0];
  EXPECT_EQ(points(read(dir + "/loss.svg"), "train"), size_t(kSteps - 1));
}

TEST(Plot, RlSmallMultiples) {
  const fs::path dir = fs::path(::testing::TempDir()) / "whale_plot_rl";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream out(dir / "metrics.jsonl");
  for (int s = 1; s <= 30; ++s)
    out << "{\"step\":" << s << ",\"reward\":" << s / 30.0 << ",\"accuracy\":" << s / 40.0
        << ",\"response_length\":" << 200 + 10 * s << ",\"kl\":" << 1e-3 * s
        << ",\"clip_fraction\":0.02,\"entropy\":" << 2.0 - s * 0.01 << ",\"lr\":1e-6}\n";
  out.close();
  const PlotReport r = plot_run(dir.string(), {});
  const std::string rl = read((dir / "rl.svg").string());
  EXPECT_TRUE(well_formed(rl));
  for (const char* title : {"Reward", "Accuracy", "Response length (tokens)", "KL to reference",
                            "Clip fraction", "Entropy (nats)"}) {
    const std::string c = chart(rl, title);
    ASSERT_FALSE(c.empty()) << title;
    EXPECT_EQ(points(c, ""), 30u) << title;  // the raw curve comes first
  }
  EXPECT_FALSE(fs::exists(dir / "experts.svg"));
}

TEST(Plot, LongRunsStaySmall) {
  // 20k steps: the curves are decimated per pixel column, the file stays small.
  const fs::path dir = fs::path(::testing::TempDir()) / "whale_plot_long";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream out(dir / "metrics.jsonl");
  for (int s = 1; s <= 20000; ++s)
    out << "{\"step\":" << s << ",\"loss\":" << 3 + std::sin(s * 0.37) << "}\n";
  out.close();
  plot_run(dir.string(), {});
  const std::string loss = read((dir / "loss.svg").string());
  EXPECT_TRUE(well_formed(loss));
  EXPECT_LT(loss.size(), 200000u);
  EXPECT_GT(points(loss, "train"), 500u);
  EXPECT_LT(points(loss, "train"), 4000u);
  const std::vector<double> x = ticks(chart(loss, "Loss"), "xtick");
  EXPECT_GE(x.back(), 20000);
  EXPECT_NE(loss.find(">20k</text>"), std::string::npos);
}

TEST(Plot, CommandLine) {
  const std::string dir = make_run("cli");
  const std::string out = (fs::path(::testing::TempDir()) / "whale_plot_cli.txt").string();
  ASSERT_EQ(std::system((std::string(WHALE_BINARY) + " plot " + dir + " --log-y --smooth 0.8 >" +
                         out + " 2>&1")
                            .c_str()),
            0);
  const std::string text = read(out);
  EXPECT_NE(text.find("warning: "), std::string::npos);
  EXPECT_NE(text.find("index.html"), std::string::npos);
  EXPECT_NE(read(dir + "/loss.svg").find("train (EMA 0.8)"), std::string::npos);
  EXPECT_NE(
      std::system(
          (std::string(WHALE_BINARY) + " plot " + dir + " --smooth 2 >" + out + " 2>&1").c_str()),
      0);
  EXPECT_NE(read(out).find("whale: error: --smooth"), std::string::npos) << read(out);
}
