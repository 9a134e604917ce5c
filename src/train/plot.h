// whale plot: SVG charts of a run's metrics.jsonl (written by whale pretrain, later whale
// grpo) and an index.html that shows them. Files written, each atomically, into the run dir:
//   loss.svg        training loss (raw, EMA), validation loss, MTP loss; learning rate and
//                   gradient norm panels
//   experts.svg     max/mean expert load per MoE layer; heatmap of the last expert loads
//   throughput.svg  tokens per second
//   rl.svg          reward, accuracy, response length, KL, clip fraction, entropy (RL runs)
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace whale {

struct PlotOptions {
  bool log_y = false;   // logarithmic loss axis
  double smooth = 0.9;  // EMA factor of the smoothed curves, in [0, 1); 0 draws raw only
};

struct PlotReport {
  std::vector<std::string> files;     // paths written, index.html last
  std::vector<std::string> warnings;  // e.g. a truncated last line that was skipped
};

PlotReport plot_run(const std::string& run_dir, const PlotOptions& options);

// metrics.jsonl as columns, one entry per step in increasing step order.
struct MetricsLog {
  std::vector<int64_t> steps;
  // Each numeric key that whale plot draws (loss, val_loss, lr, ...) -> value per step;
  // NaN where a line lacks the key or holds null (how nlohmann writes NaN).
  std::map<std::string, std::vector<double>> scalars;
  std::vector<std::vector<double>> balance_per_layer;  // per step; empty where absent
  std::vector<std::vector<double>> last_expert_load;   // MoE layer x expert token shares
  int64_t last_expert_load_step = -1;                  // -1: no line has expert_load
};

// Reads and checks metrics.jsonl. A malformed line throws whale::Error naming the file and
// line; a truncated last line (a run killed mid-write) is skipped with a warning. When
// steps repeat (a resumed run that logged a step twice), the later line wins, with a warning.
MetricsLog read_metrics_log(const std::string& path, std::vector<std::string>* warnings);

}  // namespace whale
