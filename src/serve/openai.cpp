#include "serve/openai.h"

#include <cmath>

#include "core/error.h"

namespace whale::serve {

using nlohmann::json;

json error_json(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return json{{"error", err}};
}

void invalid(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", param.empty() ? message : param + ": " + message, param);
}

namespace {

const char* type_name(const json& v) { return v.type_name(); }

json parse_body(std::string_view body, const Limits& limits) {
  if (int64_t(body.size()) > limits.max_body_bytes)
    throw ApiError(413, "invalid_request_error",
                   "request body of " + std::to_string(body.size()) + " bytes exceeds the limit of " +
                       std::to_string(limits.max_body_bytes) + " bytes");
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for numbers beyond double (found by fuzz_request). The lexer
    // rejects ill-formed UTF-8 inside strings, so this covers invalid UTF-8 too.
    throw ApiError(400, "invalid_request_error", std::string("request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) invalid("", "request body must be a JSON object, got " + std::string(type_name(j)));
  return j;
}

bool present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

double number(const json& j, const char* key, double lo, double hi) {
  const json& v = j[key];
  if (!v.is_number()) invalid(key, std::string("expected a number, got ") + type_name(v));
  double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    invalid(key, "must be between " + json(lo).dump() + " and " + json(hi).dump() + ", got " + v.dump());
  return x;
}

int64_t integer(const json& j, const char* key, int64_t lo, int64_t hi) {
  const json& v = j[key];
  if (!v.is_number_integer()) invalid(key, std::string("expected an integer, got ") + v.dump().substr(0, 40));
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) invalid(key, "is too large");
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    invalid(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(x));
  return x;
}

bool boolean(const json& j, const char* key) {
  if (!j[key].is_boolean()) invalid(key, std::string("expected a boolean, got ") + type_name(j[key]));
  return j[key].get<bool>();
}

std::string string(const json& j, const char* key) {
  if (!j[key].is_string()) invalid(key, std::string("expected a string, got ") + type_name(j[key]));
  return j[key].get<std::string>();
}

SamplingRequest parse_sampling(const json& j, const Limits& limits) {
  SamplingRequest s;
  // max_completion_tokens is the newer name for the same limit.
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (present(j, key)) s.max_tokens = integer(j, key, 1, int64_t(1) << 40);
  if (present(j, "temperature")) s.temperature = float(number(j, "temperature", 0, 2));
  if (present(j, "top_p")) s.top_p = float(number(j, "top_p", 0, 1));
  if (present(j, "top_p") && s.top_p <= 0) invalid("top_p", "must be greater than 0");
  if (present(j, "seed")) {
    const json& v = j["seed"];
    if (!v.is_number_integer()) invalid("seed", "expected an integer");
    s.seed = v.is_number_unsigned() ? v.get<uint64_t>() : uint64_t(v.get<int64_t>());
  }
  if (present(j, "n")) s.n = integer(j, "n", 1, limits.max_n);
  if (present(j, "presence_penalty")) s.presence_penalty = float(number(j, "presence_penalty", -2, 2));
  if (present(j, "frequency_penalty")) s.frequency_penalty = float(number(j, "frequency_penalty", -2, 2));
  if (present(j, "min_tokens")) s.min_tokens = integer(j, "min_tokens", 0, int64_t(1) << 40);
  if (s.max_tokens && s.min_tokens > *s.max_tokens) invalid("min_tokens", "must not exceed max_tokens");
  if (present(j, "stream")) s.stream = boolean(j, "stream");
  if (present(j, "stream_options")) {
    const json& o = j["stream_options"];
    if (!o.is_object()) invalid("stream_options", "expected an object");
    if (present(o, "include_usage")) {
      if (!o["include_usage"].is_boolean()) invalid("stream_options.include_usage", "expected a boolean");
      s.include_usage = o["include_usage"].get<bool>();
    }
  }
  if (present(j, "stop")) {
    const json& v = j["stop"];
    if (v.is_string()) {
      s.stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      if (int64_t(v.size()) > limits.max_stop)
        invalid("stop", "at most " + std::to_string(limits.max_stop) + " stop sequences");
      for (const auto& e : v) {
        if (!e.is_string()) invalid("stop", "expected strings");
        s.stop.push_back(e.get<std::string>());
      }
    } else {
      invalid("stop", std::string("expected a string or an array of strings, got ") + type_name(v));
    }
    for (const auto& x : s.stop)
      if (x.empty()) invalid("stop", "stop sequences must not be empty");
  }
  if (present(j, "logprobs") && j["logprobs"].is_boolean() && j["logprobs"].get<bool>())
    invalid("logprobs", "is not supported");
  return s;
}

// OpenAI content may be a string or an array of {"type": "text", "text": ...} parts.
json normalise_content(const json& content, const std::string& where) {
  if (!content.is_array()) return content;
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string f = where + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      invalid(f, "only {\"type\": \"text\", \"text\": ...} content parts are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<ToolSpec> parse_tools(const json& tools, const Limits& limits) {
  if (!tools.is_array()) invalid("tools", "expected an array");
  if (int64_t(tools.size()) > limits.max_tools) invalid("tools", "at most " + std::to_string(limits.max_tools) + " tools");
  std::vector<ToolSpec> out;
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    const std::string f = "tools[" + std::to_string(i) + "]";
    if (!t.is_object() || t.value("type", json("function")) != "function" || !t.contains("function") ||
        !t["function"].is_object())
      invalid(f, "expected {\"type\": \"function\", \"function\": {\"name\": ...}}");
    const json& fn = t["function"];
    if (!fn.contains("name") || !fn["name"].is_string() || fn["name"].get<std::string>().empty())
      invalid(f + ".function.name", "expected a non-empty string");
    ToolSpec spec;
    spec.name = fn["name"].get<std::string>();
    if (present(fn, "description")) {
      if (!fn["description"].is_string()) invalid(f + ".function.description", "expected a string");
      spec.description = fn["description"].get<std::string>();
    }
    if (present(fn, "parameters")) {
      if (!fn["parameters"].is_object()) invalid(f + ".function.parameters", "expected a JSON Schema object");
      spec.parameters = fn["parameters"];
    }
    out.push_back(std::move(spec));
  }
  return out;
}

std::string parse_tool_choice(const json& v, const std::vector<ToolSpec>& tools) {
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    if (s != "none" && s != "auto" && s != "required")
      invalid("tool_choice", "expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", ...}");
    if (s == "required" && tools.empty()) invalid("tool_choice", "\"required\" needs tools");
    return s;
  }
  if (!v.is_object() || !v.contains("function") || !v["function"].is_object() || !v["function"].contains("name") ||
      !v["function"]["name"].is_string())
    invalid("tool_choice", "expected {\"type\": \"function\", \"function\": {\"name\": ...}}");
  std::string name = v["function"]["name"].get<std::string>();
  for (const auto& t : tools)
    if (t.name == name) return "function:" + name;
  invalid("tool_choice", "names the function \"" + name + "\", which is not in tools");
}

std::string parse_model(const json& j) {
  if (!present(j, "model")) return "";
  return string(j, "model");
}

}  // namespace

ChatRequest parse_chat_request(std::string_view body, const Limits& limits) {
  json j = parse_body(body, limits);
  ChatRequest r;
  r.model = parse_model(j);
  if (!j.contains("messages")) invalid("messages", "is required");
  json messages = j["messages"];
  if (!messages.is_array()) invalid("messages", std::string("expected an array, got ") + type_name(messages));
  if (messages.empty()) invalid("messages", "must contain at least one message");
  if (int64_t(messages.size()) > limits.max_messages)
    throw ApiError(413, "invalid_request_error",
                   "messages: " + std::to_string(messages.size()) + " messages exceed the limit of " +
                       std::to_string(limits.max_messages),
                   "messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    json& m = messages[i];
    if (m.is_object() && m.contains("content"))
      m["content"] = normalise_content(m["content"], "messages[" + std::to_string(i) + "].content");
  }
  try {
    r.messages = tokenizer::chat_messages_from_json(messages, "messages");
  } catch (const Error& e) {
    invalid("messages", e.what());
  }
  r.sampling = parse_sampling(j, limits);
  if (present(j, "tools")) r.tools = parse_tools(j["tools"], limits);
  if (present(j, "tool_choice")) {
    r.tool_choice = parse_tool_choice(j["tool_choice"], r.tools);
  } else if (r.tools.empty()) {
    r.tool_choice = "none";
  }
  return r;
}

CompletionRequest parse_completion_request(std::string_view body, const Limits& limits) {
  json j = parse_body(body, limits);
  CompletionRequest r;
  r.model = parse_model(j);
  if (!present(j, "prompt")) invalid("prompt", "is required");
  const json& p = j["prompt"];
  if (p.is_string()) {
    r.prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    r.prompt = p[0].get<std::string>();
  } else {
    invalid("prompt", "expected a string (batched prompts: send one request each)");
  }
  if (r.prompt.empty()) invalid("prompt", "must not be empty");
  r.sampling = parse_sampling(j, limits);
  if (present(j, "echo")) r.echo = boolean(j, "echo");
  return r;
}

std::string tools_prompt(const std::vector<ToolSpec>& tools, const std::string& tool_choice) {
  if (tools.empty() || tool_choice == "none") return "";
  // The layout follows DeepSeek's published tool prompt (V3.1's chat template, "## Tools").
  std::string s = "## Tools\nYou have access to the following tools:\n";
  for (const auto& t : tools) {
    s += "\n### " + t.name + "\nDescription: " + t.description + "\n\nParameters: " +
         (t.parameters.is_null() ? std::string("{}") : t.parameters.dump()) + "\n";
  }
  s += "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>tool_call_name\n```json\n"
       "tool_call_arguments\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n\n"
       "Where \"tool_call_name\" must be the exact name of the tool and \"tool_call_arguments\" must be "
       "a JSON object with the tool's arguments.";
  return s;
}

std::string forced_tool_prefix(const std::string& tool_choice) {
  const std::string open = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>";
  if (tool_choice == "required") return open;
  if (tool_choice.starts_with("function:")) return open + tool_choice.substr(9) + "\n```json\n";
  return "";
}

}  // namespace whale::serve
