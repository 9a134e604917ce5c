// SVG charts of a run's metrics.jsonl (written by whale pretrain): loss and validation loss,
// learning rate, throughput, expert balance per layer and the final expert-load heatmap.
#pragma once
#include <string>
#include <vector>

namespace whale {

struct PlotOptions {
  bool log_y = false;
  double smooth = 0.9;  // EMA factor of the smoothed training-loss curve
};

struct PlotReport {
  std::vector<std::string> files, warnings;
};

PlotReport plot_run(const std::string& run_dir, const PlotOptions& options);

}  // namespace whale
