// Read-only view of a whole file through mmap. Pages are private copy-on-write, so a
// caller may modify weights in memory (training) without touching the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace whale {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void populate();
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes bytes to path atomically: a temporary file in the same directory, fsync, rename.
// A killed process leaves either the old file or the new one, never a torn file.
void write_file_atomic(const std::string& path, const void* data, size_t size);

// Streams a file to path.tmp.PID; commit() fsyncs and renames it into place. Destroyed
// without commit (an exception midway), it removes the temporary file.
class AtomicWriter {
 public:
  explicit AtomicWriter(const std::string& path);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  void write(const void* data, size_t size);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};
std::string read_text_file(const std::string& path);

}  // namespace whale
