// The device and release registry in PostgreSQL.
//
// REQUIRES for every write: the records passed in satisfy fleet::CheckDevice / CheckRelease
// (callers validate first, so the user sees the domain's message, not a constraint name).
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "db/connection.h"
#include "fleet/registry.h"

namespace db {

struct DeviceRecord {
  fleet::Device device;
  std::optional<std::string> last_seen;  // ISO 8601 UTC
  bool quarantined = false;
  std::string created_at;
};

struct ReleaseRecord {
  int64_t id = 0;  // publication order
  fleet::Release release;
  std::string created_at;
};

struct ImportProblem {
  int64_t line = 0;  // 1-based, the header is line 1
  std::string reason;
};

struct ImportReport {
  int64_t rows = 0;                     // data rows read
  int64_t imported = 0;                 // rows written: `rows` on success, 0 otherwise
  int64_t bad_rows = 0;                 // rows with a problem (at least problems.size())
  std::vector<ImportProblem> problems;  // the first kMaxImportProblems, in line order
  bool ok() const { return bad_rows == 0; }
};
inline constexpr size_t kMaxImportProblems = 20;

class Registry {
 public:
  explicit Registry(pqxx::connection& conn) : conn_(conn) {}

  // Throws Conflict when the id exists.
  void AddDevice(const fleet::Device& device);
  std::optional<DeviceRecord> FindDevice(const std::string& id);
  // Streams devices in id order through a cursor, so a million devices never sit in memory.
  void ForEachDevice(const std::optional<std::string>& model,
                     const std::function<void(const DeviceRecord&)>& visit);

  // Imports CSV (fleet::DeviceCsv) all-or-nothing: rows stream into a staging table with COPY;
  // if any row is malformed or duplicates another row or an existing device, nothing is written
  // and the report lists the first problems. `progress` is called with rows read so far.
  ImportReport ImportDevices(std::istream& csv,
                             const std::function<void(int64_t rows)>& progress = nullptr);

  // Throws Conflict when (model, version) exists.
  void AddRelease(const fleet::Release& release);
  std::vector<ReleaseRecord> ListReleases(const std::optional<std::string>& model = std::nullopt);
  // Sets the state and returns the previous one. Throws NotFound.
  fleet::ReleaseState SetReleaseState(const std::string& model, const std::string& version,
                                      fleet::ReleaseState state);

 private:
  pqxx::connection& conn_;
};

}  // namespace db
