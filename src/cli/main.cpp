#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"
#include "kernels/cpu_features.h"

int main(int argc, char** argv) {
  // libgomp reads its wait policy and OpenBLAS picks its kernels when they load, before main:
  // set both (a bounded spin, OpenBLAS's AVX-512 kernels; cpu_features.h) and restart once.
  whale::reexec_with_startup_env(argv);
  CLI::App app{"whale: DeepSeek-V3 architecture models in C++ (run, build, scale)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "whale 0.1.0");
  whale::cli::register_init(app);
  whale::cli::register_generate(app);
  whale::cli::register_logits(app);
  whale::cli::register_inspect(app);
  whale::cli::register_tokenizer(app);
  whale::cli::register_grad(app);
  whale::cli::register_data(app);
  whale::cli::register_pretrain(app);
  whale::cli::register_plot(app);
  whale::cli::register_sft(app);
  whale::cli::register_eval(app);
  whale::cli::register_distill(app);
  whale::cli::register_chat(app);
  whale::cli::register_serve(app);
  whale::cli::register_grpo(app);
  whale::cli::register_export_gguf(app);
  whale::cli::register_quantize(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const whale::Error& e) {
    std::fprintf(stderr, "whale: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "whale: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
