// whale plot RUN_DIR: SVG charts of a run's metrics.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "train/plot.h"

namespace whale::cli {

void register_plot(CLI::App& app) {
  struct Args {
    std::string dir;
    PlotOptions options;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("plot",
                                     "Draw a run's loss, learning rate, expert load, throughput "
                                     "and RL curves as SVG, with an index.html");
  cmd->add_option("run", a->dir, "Run directory holding metrics.jsonl")->required();
  cmd->add_flag("--log-y", a->options.log_y, "Logarithmic loss axis");
  cmd->add_option("--smooth", a->options.smooth,
                  "EMA factor of the smoothed curves, 0 <= s < 1 (0: raw only)")
      ->capture_default_str();
  cmd->callback([a] {
    PlotReport r = plot_run(a->dir, a->options);
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    for (const auto& f : r.files) std::printf("wrote %s\n", f.c_str());
  });
}

}  // namespace whale::cli
