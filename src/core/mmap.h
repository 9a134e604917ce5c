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

// Anonymous read-write memory straight from mmap (not zeroed by hand: the kernel's pages start
// zero), advised into 2 MiB transparent huge pages where the kernel allows: gigabytes of
// repacked weights fault in 512 times fewer pages than with malloc's 4 KiB ones. Throws
// whale::Error (naming what and how many bytes) when the kernel refuses.
class AnonymousMemory {
 public:
  AnonymousMemory() = default;
  AnonymousMemory(size_t bytes, const std::string& what);
  ~AnonymousMemory();
  AnonymousMemory(AnonymousMemory&& other) noexcept;
  AnonymousMemory& operator=(AnonymousMemory&& other) noexcept;
  AnonymousMemory(const AnonymousMemory&) = delete;
  AnonymousMemory& operator=(const AnonymousMemory&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// MemAvailable from /proc/meminfo in bytes (0 when it cannot be read).
size_t available_memory();

// Tells the kernel that the whole pages inside [p, p + bytes) of a file mapping will not be
// read again soon: MADV_COLD (first in line for reclaim), or with reclaim_now MADV_PAGEOUT
// (reclaimed now where nothing else maps them). Clean file pages are read back on demand; pages
// written through a private mapping are never dropped (without swap they stay): nothing is lost.
void advise_unneeded(const void* p, size_t bytes, bool reclaim_now);

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
