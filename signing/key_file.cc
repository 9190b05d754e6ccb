#include "signing/key_file.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace signing {
namespace {

std::string SystemError(const std::string& path, const char* doing, int error) {
  return "key file " + path + ": cannot " + doing + ": " + std::strerror(error);
}

std::string OctalMode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

}  // namespace

// Creates `path` exclusively with `mode` and writes `content`; on any failure removes what it
// created, so a retry starts clean.
void CreateKeyFile(const std::string& path, std::string_view content, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    const int error = errno;
    if (error == EEXIST)
      throw KeyFileError("key file " + path +
                         " already exists; a key file is never overwritten (move it away or "
                         "choose another path)");
    throw KeyFileError(SystemError(path, "create", error));
  }
  auto fail = [&](const char* doing) {
    const int error = errno;
    ::close(fd);
    ::unlink(path.c_str());
    throw KeyFileError(SystemError(path, doing, error));
  };
  // The umask may only have narrowed `mode`; set it exactly (0600 stays 0600 whatever the umask).
  if (::fchmod(fd, mode) != 0) fail("set the mode of");
  size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("sync");
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(path.c_str());
    throw KeyFileError(SystemError(path, "close", error));
  }
}

// Reads a key file, refusing what is not a small regular file and, when `secret`, what group or
// others may access. The checks are on the open descriptor (fstat), so the file checked is the
// file read.
std::string ReadKeyFile(const std::string& path, bool secret, size_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw KeyFileError(SystemError(path, "open", errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    throw KeyFileError(SystemError(path, "stat", error));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw KeyFileError("key file " + path + " is not a regular file");
  }
  if (secret && (st.st_mode & 077) != 0) {
    ::close(fd);
    throw KeyFileError("secret key file " + path + " has mode " + OctalMode(st.st_mode) +
                       ": group or others can access it, so it is refused (the key may already "
                       "be exposed); fix with: chmod 600 " +
                       path);
  }
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw KeyFileError("key file " + path + " is too large to be a fleetwave key file");
  }
  std::string content(max_bytes + 1, '\0');
  size_t got = 0;
  while (got < content.size()) {
    const ssize_t n = ::read(fd, content.data() + got, content.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      sodium_memzero(content.data(), content.size());
      ::close(fd);
      throw KeyFileError(SystemError(path, "read", error));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  content.resize(got);  // shrinking keeps the buffer: the caller's wipe covers what was read
  return content;
}

}  // namespace signing
