// Files that hold keys, the one way the project writes and reads them (Ed25519 key files here,
// PEM keys and certificates of the fleet CA in pki/).
//
// A file is created exclusively (O_CREAT|O_EXCL: an existing file is never overwritten) with an
// exact mode, whatever the umask, and synced; on failure nothing is left behind. A secret file
// is read only when it is a regular file that group and others cannot access (mode & 077 == 0);
// the refusal names the path and the fix (chmod 600). Messages never contain a file's content.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace signing {

// A key file that cannot be written or is refused. The message names the path, what is wrong and
// the fix; never the file's content.
class KeyFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Creates `path` with `mode` (e.g. 0600 for a secret, 0644 for a certificate) and writes
// `content`. Throws KeyFileError when the file exists or cannot be written.
void CreateKeyFile(const std::string& path, std::string_view content, mode_t mode);

// The content of `path`. Throws KeyFileError when it is missing or unreadable, not a regular
// file, larger than `max_bytes`, or — when `secret` — accessible by group or others.
// The caller wipes the returned string when it holds secret material.
std::string ReadKeyFile(const std::string& path, bool secret, size_t max_bytes);

}  // namespace signing
