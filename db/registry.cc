#include "db/registry.h"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "fleet/device_csv.h"
#include "fleet/version.h"

namespace db {
namespace {

constexpr const char* kIsoUtc = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

std::string SortKey(const std::string& version) {
  return fleet::Version::Parse(version)->SortKey();  // REQUIRES: validated by the caller
}

std::string DeviceColumns() {
  return std::string("id, model, firmware, ring, attributes::text, ") + "to_char(last_seen at " +
         "time zone 'UTC', " + kIsoUtc + "), quarantined, to_char(created_at at time zone 'UTC', " +
         kIsoUtc + ")";
}

DeviceRecord ToDevice(const pqxx::row& row) {
  DeviceRecord r;
  r.device.id = row[0].as<std::string>();
  r.device.model = row[1].as<std::string>();
  r.device.firmware = row[2].as<std::string>();
  r.device.ring = row[3].as<std::string>();
  const nlohmann::json attributes = nlohmann::json::parse(row[4].as<std::string>());
  for (auto it = attributes.begin(); it != attributes.end(); ++it)
    r.device.attributes[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
  if (!row[5].is_null()) r.last_seen = row[5].as<std::string>();
  r.quarantined = row[6].as<bool>();
  r.created_at = row[7].as<std::string>();
  return r;
}

}  // namespace

void Registry::AddDevice(const fleet::Device& device) {
  pqxx::work txn(conn_);
  nlohmann::json attributes(device.attributes);
  auto inserted = txn.exec_params(
      "insert into fleetwave.devices (id, model, firmware, firmware_key, ring, attributes) "
      "values ($1, $2, $3, $4, $5, $6::jsonb) on conflict (id) do nothing returning id",
      device.id, device.model, device.firmware, SortKey(device.firmware), device.ring,
      attributes.dump());
  if (inserted.empty()) throw Conflict("device " + device.id + " already exists");
  txn.commit();
}

std::optional<DeviceRecord> Registry::FindDevice(const std::string& id) {
  pqxx::read_transaction txn(conn_);
  auto rows =
      txn.exec_params("select " + DeviceColumns() + " from fleetwave.devices where id = $1", id);
  if (rows.empty()) return std::nullopt;
  return ToDevice(rows[0]);
}

void Registry::ForEachDevice(const std::optional<std::string>& model,
                             const std::function<void(const DeviceRecord&)>& visit) {
  pqxx::read_transaction txn(conn_);
  std::string query = "select " + DeviceColumns() + " from fleetwave.devices";
  if (model) query += " where model = " + txn.quote(*model);
  query += " order by id";
  pqxx::icursorstream cursor(txn, query, "fleetwave_devices", 10000);
  pqxx::result batch;
  while (cursor >> batch)
    for (const auto& row : batch) visit(ToDevice(row));
}

ImportReport Registry::ImportDevices(std::istream& csv,
                                     const std::function<void(int64_t)>& progress) {
  ImportReport report;
  auto problem = [&report](int64_t line, std::string reason) {
    ++report.bad_rows;
    if (report.problems.size() < kMaxImportProblems)
      report.problems.push_back({line, std::move(reason)});
  };

  std::string line;
  std::string error;
  if (!std::getline(csv, line)) {
    problem(1, "the file is empty: it needs the header id,model,firmware[,ring]");
    return report;
  }
  std::optional<fleet::DeviceCsv> format = fleet::DeviceCsv::FromHeader(line, &error);
  if (!format) {
    problem(1, error);
    return report;
  }

  pqxx::work txn(conn_);
  txn.exec(
      "create temp table device_import (line bigint, id text, model text, firmware text, "
      "firmware_key text collate \"C\", ring text) on commit drop");
  {
    pqxx::stream_to staging(
        txn, "device_import",
        std::vector<std::string>{"line", "id", "model", "firmware", "firmware_key", "ring"});
    for (int64_t number = 2; std::getline(csv, line); ++number) {
      if (line.empty() || line == "\r") continue;
      ++report.rows;
      if (progress && report.rows % 50000 == 0) progress(report.rows);
      std::optional<fleet::Device> device = format->ParseRow(line, &error);
      if (!device) {
        problem(number, error);
        continue;
      }
      // After the first bad row nothing will be written; keep reading only to report.
      if (report.bad_rows == 0) {
        staging << std::make_tuple(number, device->id, device->model, device->firmware,
                                   SortKey(device->firmware), device->ring);
      }
    }
    staging.complete();
  }
  if (progress) progress(report.rows);
  if (report.bad_rows > 0) return report;  // txn rolls back

  // Duplicates within the file (every occurrence after the first) and ids already registered.
  for (const auto& row :
       txn.exec("select s.line, s.id, s.first_line, d.id is not null, count(*) over () "
                "from (select line, id, min(line) over (partition by id) as first_line "
                "      from device_import) s "
                "left join fleetwave.devices d on d.id = s.id "
                "where s.line <> s.first_line or d.id is not null "
                "order by s.line limit " +
                std::to_string(kMaxImportProblems))) {
    report.bad_rows = row[4].as<int64_t>();
    std::string id = row[1].as<std::string>();
    report.problems.push_back(
        {row[0].as<int64_t>(), row[3].as<bool>()
                                   ? "device id \"" + id + "\" is already registered"
                                   : "device id \"" + id + "\" appears again (first on line " +
                                         row[2].as<std::string>() + ")"});
  }
  if (report.bad_rows > 0) return report;
  try {
    txn.exec(
        "insert into fleetwave.devices (id, model, firmware, firmware_key, ring) "
        "select id, model, firmware, firmware_key, ring from device_import");
    txn.commit();
  } catch (const pqxx::unique_violation&) {
    throw Conflict(
        "another client registered some of these devices during the import; "
        "nothing was imported: run the import again");
  }
  report.imported = report.rows;
  return report;
}

void Registry::AddRelease(const fleet::Release& release) {
  pqxx::work txn(conn_);
  auto inserted = txn.exec_params(
      "insert into fleetwave.releases "
      "  (model, version, version_key, url, sha256, size, state, counter, signature) "
      "values ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb) "
      "on conflict (model, version) do nothing returning id",
      release.model, release.version, SortKey(release.version), release.url, release.sha256,
      release.size, std::string(fleet::ToString(release.state)), release.counter,
      release.signature ? std::optional(fleet::ToJson(*release.signature).dump()) : std::nullopt);
  if (inserted.empty())
    throw Conflict("release " + release.model + " " + release.version + " already exists");
  txn.commit();
}

std::vector<ReleaseRecord> Registry::ListReleases(const std::optional<std::string>& model) {
  pqxx::read_transaction txn(conn_);
  std::string query = std::string("select id, model, version, url, sha256, size, state, ") +
                      "to_char(created_at at time zone 'UTC', " + kIsoUtc +
                      "), counter, signature ->> 'keyId', signature ->> 'value' "
                      "from fleetwave.releases";
  if (model) query += " where model = " + txn.quote(*model);
  query += " order by model, version_key desc";
  std::vector<ReleaseRecord> releases;
  for (const auto& row : txn.exec(query)) {
    ReleaseRecord r;
    r.id = row[0].as<int64_t>();
    r.release.model = row[1].as<std::string>();
    r.release.version = row[2].as<std::string>();
    r.release.url = row[3].as<std::string>();
    r.release.sha256 = row[4].as<std::string>();
    r.release.size = row[5].as<int64_t>();
    r.release.state = *fleet::ParseReleaseState(row[6].as<std::string>());
    r.created_at = row[7].as<std::string>();
    r.release.counter = row[8].as<int64_t>();
    if (!row[9].is_null())
      r.release.signature = fleet::Signature{row[9].as<std::string>(), row[10].as<std::string>()};
    releases.push_back(std::move(r));
  }
  return releases;
}

fleet::ReleaseState Registry::SetReleaseState(const std::string& model, const std::string& version,
                                              fleet::ReleaseState state) {
  pqxx::work txn(conn_);
  auto rows = txn.exec_params(
      "update fleetwave.releases r set state = $3, updated_at = now() "
      "from (select id, state from fleetwave.releases where model = $1 and version = $2 "
      "for update) old where r.id = old.id returning old.state",
      model, version, std::string(fleet::ToString(state)));
  if (rows.empty()) throw NotFound("there is no release " + model + " " + version);
  txn.commit();
  return *fleet::ParseReleaseState(rows[0][0].as<std::string>());
}

}  // namespace db
