// GPT-2's reversible byte <-> printable character map used by byte-level BPE: every byte
// becomes one visible code point, so vocab entries are strings and spaces never collide with
// the merge separator (openai/gpt-2 encoder.py, bytes_to_unicode).
#pragma once
#include <array>
#include <string>
#include <string_view>

namespace whale::tokenizer {

// UTF-8 text of the code point that stands for each byte.
const std::array<std::string, 256>& byte_to_unicode();

// Maps a byte-level token string (e.g. "Ġthe") back to raw bytes, appending to `out`.
// Characters outside the byte alphabet are copied unchanged, so a malformed vocab entry
// cannot crash decoding. Returns false when such a character was met.
bool byte_level_decode(std::string_view token, std::string& out);

// Maps raw bytes to their byte-level string.
std::string byte_level_encode(std::string_view bytes);

}  // namespace whale::tokenizer
