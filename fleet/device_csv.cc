#include "fleet/device_csv.h"

namespace fleet {

std::optional<std::vector<std::string>> SplitCsvLine(std::string_view line, std::string* error) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<std::string> fields(1);
  bool quoted = false;         // inside a quoted field
  bool after_quote = false;    // a quoted field just closed: only ',' may follow
  bool field_started = false;  // the current field has content, so '"' is no longer an opener
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c != '"') {
        fields.back() += c;
      } else if (i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else {
        quoted = false;
        after_quote = true;
      }
    } else if (c == ',') {
      fields.emplace_back();
      after_quote = field_started = false;
    } else if (after_quote) {
      *error =
          "unexpected character after a closing quote in field " + std::to_string(fields.size());
      return std::nullopt;
    } else if (c == '"' && !field_started) {
      quoted = field_started = true;
    } else {
      fields.back() += c;
      field_started = true;
    }
  }
  if (quoted) {
    *error = "field " + std::to_string(fields.size()) +
             " opens a quote that is never closed (line breaks inside fields are not supported)";
    return std::nullopt;
  }
  return fields;
}

std::optional<DeviceCsv> DeviceCsv::FromHeader(std::string_view header, std::string* error) {
  auto fields = SplitCsvLine(header, error);
  if (!fields) return std::nullopt;
  DeviceCsv csv;
  csv.columns_ = fields->size();
  for (size_t i = 0; i < fields->size(); ++i) {
    const std::string& name = (*fields)[i];
    int* slot = name == "id"         ? &csv.id_
                : name == "model"    ? &csv.model_
                : name == "firmware" ? &csv.firmware_
                : name == "ring"     ? &csv.ring_
                                     : nullptr;
    if (!slot) {
      *error = "header column \"" + name +
               "\" is unknown: the header is id,model,firmware and optionally ring";
      return std::nullopt;
    }
    if (*slot != -1) {
      *error = "header names column \"" + name + "\" twice";
      return std::nullopt;
    }
    *slot = static_cast<int>(i);
  }
  if (csv.id_ < 0 || csv.model_ < 0 || csv.firmware_ < 0) {
    *error =
        "header must name the columns id, model and firmware (and optionally ring), e.g. "
        "\"id,model,firmware,ring\"";
    return std::nullopt;
  }
  return csv;
}

std::optional<Device> DeviceCsv::ParseRow(std::string_view line, std::string* error) const {
  auto fields = SplitCsvLine(line, error);
  if (!fields) return std::nullopt;
  if (fields->size() != columns_) {
    *error = "has " + std::to_string(fields->size()) + " fields, the header has " +
             std::to_string(columns_);
    return std::nullopt;
  }
  Device device;
  device.id = std::move((*fields)[id_]);
  device.model = std::move((*fields)[model_]);
  device.firmware = std::move((*fields)[firmware_]);
  if (ring_ >= 0 && !(*fields)[ring_].empty()) device.ring = std::move((*fields)[ring_]);
  if (auto e = CheckDevice(device)) {
    *error = std::move(*e);
    return std::nullopt;
  }
  return device;
}

}  // namespace fleet
