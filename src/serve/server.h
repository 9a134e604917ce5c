// `whale serve`: an OpenAI-compatible HTTP server over the continuous-batching Engine.
// Routes: POST /v1/chat/completions, POST /v1/completions (both streaming as SSE or not),
// GET /v1/models, GET /health, GET /metrics (Prometheus text), and the web chat page at /.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/rng.h"
#include "infer/engine.h"
#include "serve/generation.h"
#include "serve/openai.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace whale::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;               // 0: any free port (see Server::port())
  std::string api_key;           // empty: no authentication
  std::string model_name = "whale";
  Limits limits;
  GenerationSettings generation;
  int threads = 64;              // HTTP worker threads: each open stream holds one
  uint64_t seed = 0;             // seeds requests that give none, in arrival order
};

class Server {
 public:
  Server(Engine& engine, const tokenizer::Tokenizer& tok, ServerOptions options);
  ~Server();
  // Binds host:port; throws whale::Error when it cannot. Returns the bound port.
  int bind();
  void run();   // serves until stop()
  void stop();
  int port() const { return port_; }

  // The Prometheus text of /metrics.
  std::string metrics_text() const;

 private:
  void routes();
  void chat(const httplib::Request& req, httplib::Response& res);
  void completion(const httplib::Request& req, httplib::Response& res);
  template <class Request>
  void generate(const Request& request, bool chat, httplib::Response& res);
  bool authorized(const httplib::Request& req) const;
  uint64_t next_seed();
  std::string next_id(const char* prefix);

  Engine& engine_;
  const tokenizer::Tokenizer& tok_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  int listen_socket_ = -1;  // the listening socket, to widen its backlog after bind

  mutable std::mutex mutex_;  // guards the counters below and rng_
  std::map<std::pair<std::string, int>, int64_t> responses_;  // (path, status) -> count
  int64_t streams_started_ = 0, streams_disconnected_ = 0;
  Rng rng_;
  uint64_t ids_ = 0;
  std::atomic<int64_t> in_flight_{0};
};

}  // namespace whale::serve
