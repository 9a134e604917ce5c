#include "core/mmap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace whale {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path, "not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw Error(path, std::string("mmap failed: ") + std::strerror(errno));
    }
    data_ = static_cast<uint8_t*>(p);
    populate();
  }
  ::close(fd);
}

size_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

AnonymousMemory::AnonymousMemory(size_t bytes, const std::string& what) {
  if (bytes == 0) return;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error(what, "cannot allocate " + std::to_string(bytes) + " bytes: " + std::strerror(errno));
#ifdef MADV_HUGEPAGE
  ::madvise(p, bytes, MADV_HUGEPAGE);  // a hint: without THP the pages are 4 KiB, nothing else changes
#endif
  data_ = static_cast<uint8_t*>(p);
  size_ = bytes;
}

AnonymousMemory::~AnonymousMemory() {
  if (data_) ::munmap(data_, size_);
}

AnonymousMemory::AnonymousMemory(AnonymousMemory&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

AnonymousMemory& AnonymousMemory::operator=(AnonymousMemory&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void advise_unneeded(const void* p, size_t bytes, bool reclaim_now) {
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  if (end <= begin) return;
  void* start = reinterpret_cast<void*>(begin);
#if defined(MADV_PAGEOUT) && defined(MADV_COLD)
  ::madvise(start, end - begin, reclaim_now ? MADV_PAGEOUT : MADV_COLD);
#else
  (void)start;
  (void)reclaim_now;
#endif
}

void MappedFile::populate() {
  // Map every page now when the file fits in memory (as llama.cpp's MAP_POPULATE does): a MoE
  // decode step otherwise takes a minor fault per 64 KiB the first time it reads each chosen
  // expert. Reading randomly chosen V2-Lite experts for the first time ran at 77% of one big
  // matrix's rate without this and 87% with it (docs/results-inference.md). A file in the page
  // cache maps in well under a second per 10 GB; a cold one is read from disk here instead of
  // during the first steps. Larger than memory: pages come and go on demand as before.
  // WHALE_MMAP_POPULATE=0: never.
  const char* env = std::getenv("WHALE_MMAP_POPULATE");
  if (env && std::string(env) == "0") return;
  const size_t available = available_memory();
  if (available == 0 || size_ > available / 10 * 9) return;
#ifdef MADV_POPULATE_READ
  if (::madvise(data_, size_, MADV_POPULATE_READ) == 0) return;
#endif
  ::madvise(data_, size_, MADV_WILLNEED);  // older kernels: read ahead at least
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

AtomicWriter::AtomicWriter(const std::string& path)
    : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) throw Error(tmp_, std::string("cannot create: ") + std::strerror(errno));
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicWriter::write(const void* data, size_t size) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(tmp_, std::string("write failed: ") + std::strerror(errno));
    }
    p += n;
    size -= size_t(n);
  }
}

void AtomicWriter::commit() {
  if (::fsync(fd_) != 0) throw Error(tmp_, std::string("fsync failed: ") + std::strerror(errno));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    ::unlink(tmp_.c_str());
    throw Error(tmp_, "close failed");
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(path_, std::string("rename failed: ") + std::strerror(err));
  }
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  AtomicWriter out(path);
  out.write(data, size);
  out.commit();
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace whale
