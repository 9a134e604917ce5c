// The web chat page's files (src/serve/web/), embedded into the binary at build time by
// src/serve/embed_web.cmake, so `whale serve` needs no install path or CDN.
#pragma once
#include <string_view>
#include <vector>

namespace whale::serve {

struct WebFile {
  std::string_view path;  // relative to src/serve/web, e.g. "index.html"
  std::string_view mime;
  std::string_view data;
};

const std::vector<WebFile>& web_files();

}  // namespace whale::serve
