#include "fs/push/config_edit.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

using nlohmann::json;
using registry::sha256_digest;

const std::string kOriginal =
    R"({"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},)"
    R"("rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"x"}]})";

PushPlan plan_of(const std::string& config) {
  PushPlan plan;
  plan.blobs.push_back(
      {sha256_digest(config), static_cast<int64_t>(config.size()), PlanBlob::Source::kReference});
  plan.blobs.push_back({"sha256:" + std::string(64, 'b'), 10, PlanBlob::Source::kReference});
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config",
                    {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                     {"digest", sha256_digest(config)},
                     {"size", config.size()}}},
                   {"layers",
                    {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                      {"digest", "sha256:" + std::string(64, 'b')},
                      {"size", 10}}}}};
  std::string bytes = manifest.dump();
  plan.manifests.push_back(
      {sha256_digest(bytes), "application/vnd.oci.image.manifest.v1+json", bytes});
  return plan;
}

TEST(ConfigEdit, AnEditIsTheNewConfigWithTheLayersKeptInStep) {
  auto plan = plan_of(kOriginal);
  auto edited = json::parse(kOriginal);
  edited["config"]["Cmd"] = {"/app", "--serve"};
  edited["config"]["Env"] = {"A=1"};
  edited["rootfs"]["diff_ids"] = json::array();  // not what the layers are
  edited.erase("history");
  ASSERT_TRUE(apply_config_edit(plan, edited.dump(), kOriginal));
  ASSERT_EQ(plan.blobs[0].source, PlanBlob::Source::kInline);
  auto pushed = json::parse(plan.blobs[0].bytes);
  EXPECT_EQ(pushed["config"]["Cmd"], json({"/app", "--serve"}));
  EXPECT_EQ(pushed["rootfs"], json::parse(kOriginal)["rootfs"]);
  EXPECT_EQ(pushed["history"], json::parse(kOriginal)["history"]);
  EXPECT_EQ(plan.blobs[0].digest, sha256_digest(plan.blobs[0].bytes));
  auto manifest = json::parse(plan.manifests.back().bytes);
  EXPECT_EQ(manifest["config"]["digest"], plan.blobs[0].digest);
  EXPECT_EQ(manifest["config"]["size"], plan.blobs[0].bytes.size());
  EXPECT_EQ(plan.manifests.back().digest, sha256_digest(plan.manifests.back().bytes));
  EXPECT_EQ(plan.blobs[1].source, PlanBlob::Source::kReference) << "layers untouched";
}

TEST(ConfigEdit, TheSameBytesChangeNothing) {
  auto plan = plan_of(kOriginal);
  auto before = plan.manifests.back().digest;
  EXPECT_FALSE(apply_config_edit(plan, kOriginal, kOriginal));
  EXPECT_EQ(plan.manifests.back().digest, before);
}

TEST(ConfigEdit, InvalidConfigsAreRefusedWithAReason) {
  const std::string platform = R"("architecture":"amd64","os":"linux",)";
  for (const std::string& bad :
       {std::string("not json"), std::string("[1]"), "{" + platform + R"("config":{"Cmd":"sh"}})",
        "{" + platform + R"("config":{"Env":["NOEQUALS"]}})",
        "{" + platform + R"("config":{"Labels":{"a":1}}})",
        "{" + platform + R"("config":{"User":5}})", "{" + platform + R"("config":[]})",
        std::string(R"({"architecture":"amd64","os":1})"),
        std::string(R"({"os":"linux","config":{}})"),
        std::string(R"({"architecture":"amd64","os":"","config":{}})")}) {
    auto plan = plan_of(kOriginal);
    try {
      apply_config_edit(plan, bad, kOriginal);
      ADD_FAILURE() << bad;
    } catch (const registry::Error& e) {
      EXPECT_EQ(e.kind(), registry::ErrorKind::kInvalid) << bad;
      EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    }
  }
  try {
    check_config(R"({"os":"linux","config":{}})");
    ADD_FAILURE() << "a config without architecture";
  } catch (const registry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("architecture is missing"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(check_config(R"({"architecture":"arm64","os":"linux","config":null})"));
  EXPECT_NO_THROW(check_config(kOriginal));
}

TEST(ConfigEdit, APlanOfAnIndexIsRefused) {
  auto plan = plan_of(kOriginal);
  plan.manifests.push_back({"sha256:" + std::string(64, 'c'),
                            "application/vnd.oci.image.index.v1+json", R"({"manifests":[]})"});
  EXPECT_THROW(apply_config_edit(plan, R"({"config":{}})", kOriginal), registry::Error);
}

}  // namespace
}  // namespace regfs::fs
