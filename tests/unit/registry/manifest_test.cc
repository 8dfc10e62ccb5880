#include "registry/manifest.h"

#include <gtest/gtest.h>

#include "registry/core/error.h"

namespace regfs::registry {
namespace {

const std::string kA = "sha256:" + std::string(64, 'a');
const std::string kB = "sha256:" + std::string(64, 'b');
const std::string kC = "sha256:" + std::string(64, 'c');

std::string oci_manifest(const std::string& media_type_field = "") {
  return R"({"schemaVersion":2,)" + media_type_field +
         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + kA +
         R"(","size":7},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
         kB + R"(","size":100,"annotations":{"k":"v","n":1}}]})";
}

std::string entry(const std::string& digest, const std::string& platform) {
  return R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + digest +
         R"(","size":10)" + (platform.empty() ? "" : R"(,"platform":)" + platform) + "}";
}

std::string index_of(const std::vector<std::string>& entries) {
  std::string out =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)";
  for (size_t i = 0; i < entries.size(); ++i) {
    out += (i ? "," : "") + entries[i];
  }
  return out + "]}";
}

ErrorKind kind_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no Error thrown";
  return ErrorKind::kIo;
}

TEST(ManifestTest, ParsesOciManifest) {
  Manifest m = parse_manifest(oci_manifest());
  EXPECT_EQ(m.media_type, media_type::kOciManifest);  // guessed from shape
  EXPECT_EQ(m.config.digest, kA);
  EXPECT_EQ(m.config.size, 7);
  ASSERT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].media_type, media_type::kOciLayerGzip);
  EXPECT_EQ(m.layers[0].size, 100);
  EXPECT_EQ(m.layers[0].annotations.at("k"), "v");
  EXPECT_EQ(m.layers[0].annotations.count("n"), 0u);  // non-string skipped

  Manifest docker = parse_manifest(
      oci_manifest(R"("mediaType":"application/vnd.docker.distribution.manifest.v2+json",)"));
  EXPECT_EQ(docker.media_type, media_type::kDockerManifest);
}

TEST(ManifestTest, RejectsBadManifests) {
  auto parse = [](std::string text) { return [text] { parse_manifest(text); }; };
  EXPECT_EQ(kind_of(parse("not json")), ErrorKind::kInvalid);
  EXPECT_EQ(kind_of(parse("[]")), ErrorKind::kInvalid);
  EXPECT_EQ(kind_of(parse(R"({"schemaVersion":2,"config":{}})")), ErrorKind::kInvalid);
  std::string bad_digest = oci_manifest();
  bad_digest.replace(bad_digest.find(kB), kB.size(), "sha256:xyz");
  EXPECT_EQ(kind_of(parse(bad_digest)), ErrorKind::kInvalid);
  std::string negative = oci_manifest();
  negative.replace(negative.find("\"size\":100"), 10, "\"size\":-1");
  EXPECT_EQ(kind_of(parse(negative)), ErrorKind::kInvalid);
  std::string no_layers =
      R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + kA + R"(","size":1}})";
  EXPECT_EQ(kind_of(parse(no_layers)), ErrorKind::kInvalid);
  // Over 4 MiB.
  std::string huge = oci_manifest();
  huge.insert(huge.size() - 1, ",\"pad\":\"" + std::string(4 << 20, 'x') + "\"");
  EXPECT_EQ(kind_of(parse(huge)), ErrorKind::kInvalid);
  // An index is not a manifest.
  EXPECT_EQ(kind_of(parse(index_of({}))), ErrorKind::kInvalid);
}

TEST(ManifestTest, Schema1AndUnknownTypesAreUnsupported) {
  EXPECT_EQ(
      kind_of([] { parse_manifest(R"({"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]})"); }),
      ErrorKind::kUnsupported);
  EXPECT_EQ(
      kind_of([] {
        parse_manifest(
            R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"})");
      }),
      ErrorKind::kUnsupported);
  EXPECT_EQ(kind_of([] {
              parse_manifest(
                  oci_manifest(R"("mediaType":"application/vnd.oci.artifact.manifest.v1+json",)"));
            }),
            ErrorKind::kUnsupported);
}

TEST(ManifestTest, ParsesIndex) {
  Index index = parse_index(index_of(
      {entry(kA, R"({"os":"linux","architecture":"amd64"})"),
       entry(kB, R"({"os":"linux","architecture":"arm64","variant":"v8"})"), entry(kC, "")}));
  EXPECT_EQ(index.media_type, media_type::kOciIndex);
  ASSERT_EQ(index.manifests.size(), 3u);
  EXPECT_EQ(index.manifests[1].platform->variant, "v8");
  EXPECT_FALSE(index.manifests[2].platform.has_value());
  EXPECT_EQ(kind_of([] { parse_index(oci_manifest()); }), ErrorKind::kInvalid);
  EXPECT_EQ(kind_of([] { parse_index(index_of({entry(kA, R"({"os":"linux"})")})); }),
            ErrorKind::kInvalid);
}

TEST(ManifestTest, DetectMediaType) {
  EXPECT_EQ(detect_media_type(oci_manifest(), ""), media_type::kOciManifest);
  EXPECT_EQ(detect_media_type(R"({"manifests":[]})", ""), media_type::kOciIndex);
  EXPECT_EQ(detect_media_type(
                R"({"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"})",
                media_type::kOciIndex),
            media_type::kDockerManifestList);
  EXPECT_EQ(detect_media_type(R"({"config":{}})",
                              "application/vnd.docker.distribution.manifest.v2+json; "
                              "charset=utf-8"),
            media_type::kDockerManifest);
  EXPECT_EQ(detect_media_type(R"({"config":{}})", "application/json"), media_type::kOciManifest);
  EXPECT_EQ(detect_media_type(R"({"schemaVersion":1})", ""), media_type::kDockerSchema1);
  EXPECT_EQ(detect_media_type("garbage", "text/plain"), "text/plain");
}

TEST(ManifestTest, MediaTypeHelpers) {
  EXPECT_TRUE(is_index_media_type(media_type::kDockerManifestList));
  EXPECT_TRUE(is_manifest_media_type(media_type::kDockerManifest));
  EXPECT_FALSE(is_manifest_media_type(media_type::kOciIndex));
  std::string accept = manifest_accept_header();
  for (auto type : {media_type::kOciIndex, media_type::kOciManifest,
                    media_type::kDockerManifestList, media_type::kDockerManifest}) {
    EXPECT_NE(accept.find(type), std::string::npos) << type;
  }
  EXPECT_EQ(accept.find("v1+prettyjws"), std::string::npos);
}

TEST(ManifestTest, Platforms) {
  EXPECT_EQ(parse_platform("linux/arm64/v8"), (Platform{"linux", "arm64", "v8"}));
  EXPECT_EQ(parse_platform("linux/amd64").to_string(), "linux/amd64");
  EXPECT_EQ(parse_platform("linux/arm/v7").to_string(), "linux/arm/v7");
  for (const char* bad : {"", "linux", "linux/", "/amd64", "a/b/c/d", "a//c"}) {
    EXPECT_THROW(parse_platform(bad), Error) << bad;
  }
  Platform host = host_platform();
  EXPECT_EQ(host.os, "linux");
  EXPECT_FALSE(host.architecture.empty());
}

TEST(ManifestTest, SelectPlatform) {
  Index index = parse_index(index_of(
      {entry(kA, R"({"os":"linux","architecture":"arm","variant":"v6"})"),
       entry(kB, R"({"os":"linux","architecture":"arm","variant":"v7"})"),
       entry(kC, R"({"os":"linux","architecture":"arm64","variant":"v8"})"),
       entry("sha256:" + std::string(64, 'd'), R"({"os":"linux","architecture":"amd64"})"),
       entry("sha256:" + std::string(64, 'e'), R"({"os":"unknown","architecture":"unknown"})")}));
  EXPECT_EQ(select_platform(index, {"linux", "arm", "v7"})->digest, kB);
  EXPECT_EQ(select_platform(index, {"linux", "arm", ""})->digest, kB);    // v7
  EXPECT_EQ(select_platform(index, {"linux", "arm64", ""})->digest, kC);  // v8
  EXPECT_EQ(select_platform(index, {"linux", "arm64", "v8"})->digest, kC);
  EXPECT_EQ(select_platform(index, {"linux", "amd64", ""})->digest[7], 'd');
  EXPECT_EQ(select_platform(index, {"linux", "amd64", "v1"})->digest[7], 'd');
  // No exact variant: any variant of the same os/arch.
  EXPECT_EQ(select_platform(index, {"linux", "arm", "v5"})->digest, kA);
  EXPECT_EQ(select_platform(index, {"linux", "s390x", ""}), nullptr);
  EXPECT_EQ(select_platform(index, {"windows", "amd64", ""}), nullptr);
  EXPECT_EQ(select_platform(Index{}, host_platform()), nullptr);
}

}  // namespace
}  // namespace regfs::registry
