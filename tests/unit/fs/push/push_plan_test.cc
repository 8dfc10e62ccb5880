// Push plans without a registry: descriptor choice in index.json (SPEC §4),
// completeness (staged, referenced or in the target), children before
// indexes, thin retags, and the manifest built for a docker save directory.
#include "fs/push/push_plan.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

using registry::sha256_digest;

// A staged tag in memory: files by path; blobs by digest.
class FakeLayout : public StagedLayout {
 public:
  std::map<std::string, std::string> files;
  std::map<std::string, std::string> blobs;  // staged
  std::set<std::string> target;              // in the target repository

  std::string add_blob(const std::string& bytes) {
    auto digest = sha256_digest(bytes);
    blobs[digest] = bytes;
    return digest;
  }
  std::optional<std::string> read_file(const std::string& path) override {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return it->second;
  }
  std::optional<FileInfo> file_info(const std::string& path) override {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return FileInfo{path, static_cast<int64_t>(it->second.size()), sha256_digest(it->second)};
  }
  std::optional<PlanBlob> staged_blob(const std::string& digest) override {
    auto it = blobs.find(digest);
    if (it == blobs.end()) return std::nullopt;
    return PlanBlob{digest,
                    static_cast<int64_t>(it->second.size()),
                    PlanBlob::Source::kStaged,
                    "blobs/" + digest,
                    {}};
  }
  std::string manifest_bytes(const PlanBlob& blob) override { return blobs.at(blob.digest); }
  std::string config_bytes(const PlanBlob& blob) override { return blobs.at(blob.digest); }
  bool in_target(const std::string& digest) override { return target.count(digest) > 0; }
  std::optional<std::string> target_manifest(const std::string&) override { return std::nullopt; }
};

std::string descriptor(const std::string& type, const std::string& digest, size_t size,
                       const std::string& ref = "") {
  nlohmann::json d = {{"mediaType", type}, {"digest", digest}, {"size", size}};
  if (!ref.empty()) d["annotations"] = {{"org.opencontainers.image.ref.name", ref}};
  return d.dump();
}

std::string manifest_of(FakeLayout& layout, const std::string& config, const std::string& layer) {
  auto c = layout.add_blob(config);
  auto l = sha256_digest(layer);
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
         descriptor("application/vnd.oci.image.config.v1+json", c, config.size()) +
         R"(,"layers":[)" + descriptor("application/vnd.oci.image.layer.v1.tar", l, layer.size()) +
         "]}";
}

std::string index_of(const std::vector<std::string>& descriptors) {
  std::string out = R"({"schemaVersion":2,"manifests":[)";
  for (size_t i = 0; i < descriptors.size(); ++i) out += (i ? "," : "") + descriptors[i];
  return out + "]}";
}

TEST(PushPlan, IncompleteUntilEveryBlobIsThere) {
  FakeLayout layout;
  EXPECT_EQ(plan_push(layout, "v1"), std::nullopt);
  auto manifest = manifest_of(layout, "{}", "layer");
  auto digest = layout.add_blob(manifest);
  layout.files["index.json"] =
      index_of({descriptor("application/vnd.oci.image.manifest.v1+json", digest, manifest.size())});
  EXPECT_EQ(plan_push(layout, "v1"), std::nullopt);  // the layer is missing
  layout.target.insert(sha256_digest("layer"));      // ... but the registry has it
  auto plan = plan_push(layout, "v1");
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->digest(), digest);
  ASSERT_EQ(plan->blobs.size(), 2u);
  EXPECT_EQ(plan->blobs[1].source, PlanBlob::Source::kTarget);
  layout.add_blob("layer");
  plan = plan_push(layout, "v1");
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->blobs[1].source, PlanBlob::Source::kStaged);
}

// Registries take manifests and configs up to 4 MiB: a bigger one is refused
// while planning, before any upload, with the limit in the message.
TEST(PushPlan, ManifestsAndConfigsOverTheLimitAreRefused) {
  auto expect_limit = [](FakeLayout& layout, const std::string& what) {
    try {
      plan_push(layout, "v1");
      ADD_FAILURE() << what << " over 4 MiB was planned";
    } catch (const registry::Error& e) {
      EXPECT_EQ(e.kind(), registry::ErrorKind::kInvalid);
      EXPECT_NE(std::string(e.what()).find("up to 4 MiB"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  FakeLayout big_config;
  std::string config = R"({"pad":")" + std::string(kMaxManifestBytes, 'x') + R"("})";
  auto manifest = manifest_of(big_config, config, "layer");
  big_config.add_blob("layer");
  big_config.files["manifest.json"] = manifest;
  expect_limit(big_config, "config sha256:");

  FakeLayout big_manifest;
  std::string padded = manifest_of(big_manifest, "{}", "layer");
  padded.insert(padded.size() - 1,
                R"(,"annotations":{"pad":")" + std::string(kMaxManifestBytes, 'x') + R"("})");
  big_manifest.add_blob("layer");
  auto digest = big_manifest.add_blob(padded);
  big_manifest.files["index.json"] =
      index_of({descriptor("application/vnd.oci.image.manifest.v1+json", digest, padded.size())});
  expect_limit(big_manifest, "manifest " + digest);

  EXPECT_NO_THROW(check_manifest_size("x", kMaxManifestBytes));
}

TEST(PushPlan, ChoosesTheDescriptorNamedLikeTheTag) {
  FakeLayout layout;
  auto a = manifest_of(layout, R"({"a":1})", "la");
  auto b = manifest_of(layout, R"({"b":1})", "lb");
  layout.add_blob("la");
  layout.add_blob("lb");
  auto da = layout.add_blob(a), db = layout.add_blob(b);
  const std::string type = "application/vnd.oci.image.manifest.v1+json";
  layout.files["index.json"] =
      index_of({descriptor(type, da, a.size(), "one"), descriptor(type, db, b.size(), "two")});
  EXPECT_EQ(plan_push(layout, "two")->digest(), db);
  EXPECT_EQ(plan_push(layout, "one")->digest(), da);
  try {
    plan_push(layout, "three");
    FAIL() << "no error";
  } catch (const registry::Error& e) {
    EXPECT_EQ(e.kind(), registry::ErrorKind::kInvalid);
  }
}

TEST(PushPlan, ChildManifestsBeforeTheirIndex) {
  FakeLayout layout;
  auto m = manifest_of(layout, "{}", "l");
  layout.add_blob("l");
  auto dm = layout.add_blob(m);
  const std::string type = "application/vnd.oci.image.manifest.v1+json";
  auto top =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)" +
      descriptor(type, dm, m.size()) + "]}";
  auto dtop = layout.add_blob(top);
  layout.files["index.json"] =
      index_of({descriptor("application/vnd.oci.image.index.v1+json", dtop, top.size())});
  auto plan = plan_push(layout, "v1");
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->manifests.size(), 2u);
  EXPECT_EQ(plan->manifests[0].digest, dm);
  EXPECT_EQ(plan->digest(), dtop);
}

TEST(PushPlan, NarrowsAnIndexToThePlatformsImage) {
  FakeLayout layout;
  auto amd = manifest_of(layout, R"({"architecture":"amd64"})", "amd64 layer");
  auto arm = manifest_of(layout, R"({"architecture":"arm64"})", "arm64 layer");
  layout.add_blob("amd64 layer");
  layout.add_blob("arm64 layer");
  auto damd = layout.add_blob(amd);
  auto darm = layout.add_blob(arm);
  const std::string type = "application/vnd.oci.image.manifest.v1+json";
  auto child = [&](const std::string& digest, size_t size, const std::string& arch) {
    auto d = nlohmann::json::parse(descriptor(type, digest, size));
    d["platform"] = {{"os", "linux"}, {"architecture", arch}};
    return d.dump();
  };
  auto top =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)" +
      child(damd, amd.size(), "amd64") + "," + child(darm, arm.size(), "arm64") + "]}";
  auto dtop = layout.add_blob(top);
  layout.files["index.json"] =
      index_of({descriptor("application/vnd.oci.image.index.v1+json", dtop, top.size())});
  auto plan = plan_push(layout, "v1");
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->manifests.size(), 3u);
  ASSERT_EQ(plan->blobs.size(), 4u);

  auto missing = *plan;
  EXPECT_THROW(narrow_to_platform(missing, registry::parse_platform("linux/s390x")),
               registry::Error);
  EXPECT_EQ(narrow_to_platform(*plan, registry::parse_platform("linux/arm64")), "linux/arm64");
  ASSERT_EQ(plan->manifests.size(), 1u);
  EXPECT_EQ(plan->digest(), darm);
  std::set<std::string> blobs;
  for (const auto& blob : plan->blobs) blobs.insert(blob.digest);
  EXPECT_EQ(blobs, (std::set<std::string>{sha256_digest(R"({"architecture":"arm64"})"),
                                          sha256_digest("arm64 layer")}));
  EXPECT_EQ(narrow_to_platform(*plan, registry::parse_platform("linux/arm64")), "")
      << "a plan of one image is left as it is";
}

TEST(PushPlan, ThinRetagFromManifestJson) {
  FakeLayout layout;
  auto m = manifest_of(layout, "{}", "l");
  layout.target.insert(sha256_digest("l"));
  layout.files["manifest.json"] = m;
  auto plan = plan_push(layout, "v2");
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->digest(), sha256_digest(m));
}

TEST(PushPlan, DockerSaveDirectory) {
  FakeLayout layout;
  layout.files["cfg.json"] = R"({"rootfs":{"type":"layers","diff_ids":[]}})";
  layout.files["abc/layer.tar"] = "tar bytes";
  layout.files["manifest.json"] =
      R"([{"Config":"cfg.json","RepoTags":["app:v1"],"Layers":["abc/layer.tar"]}])";
  auto plan = plan_push(layout, "v1");
  ASSERT_TRUE(plan);
  auto manifest = nlohmann::json::parse(plan->manifests.back().bytes);
  EXPECT_EQ(manifest["config"]["digest"], sha256_digest(layout.files["cfg.json"]));
  EXPECT_EQ(manifest["layers"][0]["digest"], sha256_digest("tar bytes"));
  EXPECT_EQ(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
  EXPECT_EQ(plan->blobs.size(), 2u);
  layout.files.erase("abc/layer.tar");
  EXPECT_EQ(plan_push(layout, "v1"), std::nullopt);
  layout.files["manifest.json"] = R"([{"Config":"../x","Layers":[]}])";
  EXPECT_THROW(plan_push(layout, "v1"), registry::Error);
}

}  // namespace
}  // namespace regfs::fs
