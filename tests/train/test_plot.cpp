#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "core/error.h"
#include "core/mmap.h"
#include "train/plot.h"

using namespace whale;
namespace fs = std::filesystem;

namespace {
std::string make_run(const std::string& name, const std::string& extra_last_line) {
  const fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::create_directories(dir);
  std::ofstream out(dir / "metrics.jsonl");
  for (int s = 1; s <= 40; ++s) {
    out << "{\"step\":" << s << ",\"loss\":" << 8.0 - s * 0.1 << ",\"lr\":0.001,\"tokens_per_sec\":1000";
    out << ",\"balance_per_layer\":[1.5,1.2,1.1],\"expert_load\":[[0.1,0.2,0.1,0.1,0.1,0.2,0.1,0.1],"
           "[0.125,0.125,0.125,0.125,0.125,0.125,0.125,0.125],[0.5,0.5,0,0,0,0,0,0]]";
    if (s % 10 == 0) out << ",\"val_loss\":" << 8.2 - s * 0.1;
    out << "}\n";
  }
  out << extra_last_line;
  return dir.string();
}
}  // namespace

TEST(Plot, DrawsEveryCurve) {
  const std::string dir = make_run("plot_ok", "{\"step\":41,\"loss\":3.");  // truncated by a kill
  PlotReport r = plot_run(dir, {});
  ASSERT_EQ(r.warnings.size(), 1u);
  const std::string loss = read_text_file(dir + "/loss.svg");
  // train (raw), EMA and validation polylines; the raw one has a point per step
  std::smatch m;
  ASSERT_TRUE(std::regex_search(loss, m, std::regex("points=\"([^\"]*)\"")));
  const std::string pts = m[1];
  EXPECT_EQ(std::count(pts.begin(), pts.end(), ','), 40);
  EXPECT_NE(loss.find("validation loss"), std::string::npos);
  EXPECT_EQ(std::count(loss.begin(), loss.end(), '<') - std::count(loss.begin(), loss.end(), '>'), 0);
  // tick labels bracket the data (4.0 .. 7.9)
  EXPECT_NE(loss.find(">4<"), std::string::npos);
  EXPECT_NE(loss.find(">7<"), std::string::npos);
  const std::string heat = read_text_file(dir + "/expert_load.svg");
  EXPECT_EQ(std::count(heat.begin(), heat.end(), '\n') > 24, true);
  EXPECT_NE(heat.find("MoE layer 2"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir + "/experts.svg"));
  EXPECT_TRUE(fs::exists(dir + "/index.html"));
}

TEST(Plot, MalformedMiddleLineNamesTheLine) {
  const std::string dir = make_run("plot_bad", "not json\n{\"step\":42,\"loss\":1}\n");
  try {
    plot_run(dir, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl:41"), std::string::npos) << e.what();
  }
}
