// whale data prepare: tokenise text files into training shards.
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "train/data.h"

namespace whale::cli {

void register_data(CLI::App& app) {
  auto o = std::make_shared<DataPrepareOptions>();
  CLI::App* data = app.add_subcommand("data", "Training data");
  data->require_subcommand(1);
  CLI::App* prep = data->add_subcommand("prepare", "Tokenise text files into uint32 shards with a validation split");
  prep->add_option("--tokenizer", o->tokenizer, "tokenizer.json")->required()->check(CLI::ExistingFile);
  prep->add_option("--out", o->out_dir, "Output data directory")->required();
  prep->add_option("--val-fraction", o->val_fraction, "Share of documents held out")->capture_default_str();
  prep->add_option("--shard-tokens", o->shard_tokens, "Tokens per shard file")->capture_default_str();
  prep->add_option("--seed", o->seed, "Seed of the train/validation assignment")->capture_default_str();
  prep->add_option("files", o->files, "Text files")->required();
  prep->callback([o] {
    TerminalProgress progress;
    auto t0 = std::chrono::steady_clock::now();
    DataStats s = prepare_data(*o, &progress);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%lld documents, %lld train tokens (%lld shards), %lld validation tokens (%lld shards); %.1f MB/s -> %s\n",
                (long long)s.documents, (long long)s.train_tokens, (long long)s.train_shards,
                (long long)s.val_tokens, (long long)s.val_shards, double(s.input_bytes) / 1e6 / dt, o->out_dir.c_str());
  });
}

}  // namespace whale::cli
