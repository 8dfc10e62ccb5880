#include "fs/push/config_edit.h"

#include <nlohmann/json.hpp>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/manifest.h"

namespace regfs::fs {

using nlohmann::json;
using registry::Error;
using registry::ErrorKind;

namespace {

[[noreturn]] void invalid(const std::string& why) {
  throw Error(ErrorKind::kInvalid, "Cannot use config.json: " + why);
}

bool strings(const json& value) {
  if (!value.is_array()) return false;
  for (const auto& item : value) {
    if (!item.is_string()) return false;
  }
  return true;
}

bool string_map(const json& value) {
  if (!value.is_object()) return false;
  for (const auto& [_, item] : value.items()) {
    if (!item.is_string()) return false;
  }
  return true;
}

}  // namespace

void check_config(const std::string& bytes) {
  auto doc = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) invalid("not JSON");
  if (!doc.is_object()) invalid("not a JSON object");
  for (const char* key : {"architecture", "os", "variant", "created", "author"}) {
    if (doc.contains(key) && !doc[key].is_string()) invalid(std::string(key) + " is not a string");
  }
  // Required by the image spec (config.md: architecture, os).
  for (const char* key : {"architecture", "os"}) {
    if (!doc.contains(key) || doc[key].get<std::string>().empty()) {
      invalid(std::string(key) + " is missing (the image spec requires it)");
    }
  }
  if (!doc.contains("config") || doc["config"].is_null()) return;
  const auto& config = doc["config"];
  if (!config.is_object()) invalid("config is not an object");
  for (const char* key : {"Cmd", "Entrypoint", "Env"}) {
    if (config.contains(key) && !config[key].is_null() && !strings(config[key])) {
      invalid(std::string("config.") + key + " is not a list of strings");
    }
  }
  for (const char* key : {"WorkingDir", "User", "StopSignal"}) {
    if (config.contains(key) && !config[key].is_null() && !config[key].is_string()) {
      invalid(std::string("config.") + key + " is not a string");
    }
  }
  if (config.contains("Labels") && !config["Labels"].is_null() && !string_map(config["Labels"])) {
    invalid("config.Labels is not an object of strings");
  }
  for (const char* key : {"ExposedPorts", "Volumes"}) {
    if (config.contains(key) && !config[key].is_null() && !config[key].is_object()) {
      invalid(std::string("config.") + key + " is not an object");
    }
  }
  if (config.contains("Env") && strings(config["Env"])) {
    for (const auto& item : config["Env"]) {
      if (item.get<std::string>().find('=') == std::string::npos) {
        invalid("config.Env entry \"" + item.get<std::string>() + "\" has no '='");
      }
    }
  }
}

bool apply_config_edit(PushPlan& plan, const std::string& config_json,
                       const std::string& original) {
  if (config_json == original) return false;
  check_config(config_json);
  if (plan.manifests.size() != 1 ||
      !registry::is_manifest_media_type(plan.manifests.back().media_type)) {
    invalid("the plan is of an index, not of one image");
  }
  auto edited = json::parse(config_json);
  auto base = json::parse(original, nullptr, false);
  // The layers are the image's: what describes them stays in step.
  if (base.is_object()) {
    for (const char* key : {"rootfs", "history"}) {
      if (base.contains(key)) {
        edited[key] = base[key];
      } else {
        edited.erase(key);
      }
    }
  }
  std::string bytes = edited.dump();
  auto& top = plan.manifests.back();
  auto manifest = json::parse(top.bytes);
  std::string old_digest = manifest["config"].value("digest", "");
  if (bytes == original) return false;
  std::string digest = registry::sha256_digest(bytes);
  manifest["config"]["digest"] = digest;
  manifest["config"]["size"] = bytes.size();
  for (auto& blob : plan.blobs) {
    if (blob.digest != old_digest) continue;
    blob = PlanBlob{digest, static_cast<int64_t>(bytes.size()), PlanBlob::Source::kInline};
    blob.bytes = bytes;
  }
  top.bytes = manifest.dump();
  top.digest = registry::sha256_digest(top.bytes);
  return true;
}

}  // namespace regfs::fs
