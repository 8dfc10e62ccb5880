// Image directories (SPEC §3) on a fake source (fake_source.h): their
// entries and attrs, the OCI layout files, blobs read through the real
// BlobReader and cache, multi-platform indexes, what an image directory
// serves once its registry is down, and the status file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "fake_source.h"
#include "fs/tree/image.h"
#include "fs/tree/tree.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

using registry::ErrorKind;
using testing::FakeRegistry;
using testing::FakeTree;
using Set = std::set<std::string>;

constexpr const char* kRegistry = "reg.test:5000";

// The bytes an opened file serves: in memory, or read through its reader.
std::string read_all(const OpenedFile& file) {
  if (file.bytes) return *file.bytes;
  if (!file.reader) return "<neither bytes nor a reader>";
  auto lease = file.reader->read(0, file.reader->size());
  std::string out(lease.length(), '\0');
  EXPECT_EQ(pread(lease.fd(), out.data(), out.size(), static_cast<off_t>(lease.offset())),
            static_cast<ssize_t>(out.size()));
  return out;
}

std::string hex(const std::string& digest) { return std::string(registry::digest_hex(digest)); }

// app:v1, an image of two layers; app:multi, an index of linux/amd64 and
// linux/arm64/v8 images.
class ImageDirTest : public ::testing::Test {
 protected:
  explicit ImageDirTest(registry::Platform platform = testing::kAmd64)
      : fake_(kRegistry, std::move(platform)), reg_(fake_.source.add(kRegistry)) {
    layer_a_ = reg_.put_blob("layer a bytes", std::string(registry::media_type::kOciLayerTar));
    layer_b_ = reg_.put_blob("layer b", std::string(registry::media_type::kOciLayerTar));
    image_ = reg_.put_manifest({layer_a_, layer_b_});
    reg_.put_tag("app", "v1", image_.digest);
    amd64_ = reg_.put_image({"amd64 layer"}, testing::kAmd64);
    arm64_ = reg_.put_image({"arm64 layer"}, testing::kArm64);
    index_ = reg_.put_index({amd64_, arm64_});
    reg_.put_tag("app", "multi", index_.digest);
  }
  NodePtr at(const std::string& path) { return fake_.at(path); }
  NodePtr must(const std::string& path) { return fake_.must(path); }
  Tree& tree() { return *fake_.tree; }
  std::string open(const std::string& path) { return read_all(tree().open(*fake_.must(path))); }
  // The descriptor a manifest names as its config.
  nlohmann::json config_of(const std::string& manifest_digest) {
    auto manifest = nlohmann::json::parse(reg_.manifest("app", manifest_digest));
    return manifest["config"];
  }

  FakeTree fake_;
  FakeRegistry& reg_;
  registry::Descriptor layer_a_, layer_b_, image_, amd64_, arm64_, index_;
};

TEST_F(ImageDirTest, AnImageDirectoryListsTheLayoutFilesAndBlobs) {
  EXPECT_EQ(fake_.listing(*must("app/v1")),
            (std::vector<std::string>{"blobs", "config.json", "index.json", "manifest.json",
                                      "oci-layout"}));
  EXPECT_EQ(fake_.listing(*must("app/v1/blobs")), std::vector<std::string>{"sha256"});
  auto config = config_of(image_.digest)["digest"].get<std::string>();
  EXPECT_EQ(fake_.names("app/v1/blobs/sha256"),
            (Set{hex(image_.digest), hex(config), hex(layer_a_.digest), hex(layer_b_.digest)}));
  EXPECT_EQ(at("app/v1/other"), nullptr);
  EXPECT_EQ(at("app/v1/blobs/sha512"), nullptr);
  EXPECT_EQ(at("app/v1/blobs/sha256/" + std::string(64, 'a')), nullptr) << "not this image's";
  EXPECT_EQ(at("app/v1/blobs/sha256/xyz"), nullptr);
}

TEST_F(ImageDirTest, TheLayoutFilesSayWhatTheImageIs) {
  EXPECT_EQ(open("app/v1/oci-layout"), kOciLayoutFile);
  auto manifest = reg_.manifest("app", image_.digest);
  EXPECT_EQ(open("app/v1/manifest.json"), manifest);
  auto index = nlohmann::json::parse(open("app/v1/index.json"));
  ASSERT_EQ(index["manifests"].size(), 1u);
  EXPECT_EQ(index["manifests"][0]["digest"], image_.digest);
  EXPECT_EQ(index["manifests"][0]["size"], manifest.size());
  EXPECT_EQ(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v1");
  auto pinned = nlohmann::json::parse(open("app/" + image_.digest + "/index.json"));
  EXPECT_FALSE(pinned["manifests"][0].contains("annotations")) << "a digest names no tag";
  auto config = config_of(image_.digest);
  EXPECT_EQ(open("app/v1/config.json"), reg_.small_blob("app", config["digest"].get<std::string>(),
                                                        config["size"].get<int64_t>()));
}

TEST_F(ImageDirTest, AttrsGiveEachFilesSize) {
  auto size = [&](const std::string& path) { return tree().attr(*must(path)).size; };
  for (std::string name : {"oci-layout", "index.json", "manifest.json", "config.json"}) {
    auto attr = tree().attr(*must("app/v1/" + name));
    EXPECT_EQ(attr.mode, S_IFREG | 0444) << name;
    EXPECT_EQ(attr.size, open("app/v1/" + name).size()) << name;
  }
  EXPECT_EQ(size("app/v1/blobs/sha256/" + hex(layer_a_.digest)), 13u);
  EXPECT_EQ(tree().attr(*must("app/v1/blobs")).mode, S_IFDIR | 0555);
  EXPECT_EQ(tree().attr(*must("app/v1")).nlink, 2u);
}

TEST_F(ImageDirTest, BlobsAreReadThroughTheCache) {
  auto layer = tree().open(*must("app/v1/blobs/sha256/" + hex(layer_a_.digest)));
  ASSERT_NE(layer.reader, nullptr) << "a layer is read lazily, not held in memory";
  EXPECT_EQ(read_all(layer), "layer a bytes");
  EXPECT_TRUE(layer.reader->verified());
  EXPECT_EQ(reg_.calls("fetch " + layer_a_.digest), 1);
  EXPECT_EQ(open("app/v1/blobs/sha256/" + hex(layer_a_.digest)), "layer a bytes");
  EXPECT_EQ(reg_.calls("fetch " + layer_a_.digest), 1) << "the second read is the cache's";
  auto manifest = tree().open(*must("app/v1/blobs/sha256/" + hex(image_.digest)));
  ASSERT_NE(manifest.bytes, nullptr) << "manifests come whole from the manifests endpoint";
  EXPECT_EQ(*manifest.bytes, reg_.manifest("app", image_.digest));
}

TEST_F(ImageDirTest, XattrsNameTheManifest) {
  auto dir = must("app/v1");
  EXPECT_EQ(tree().xattr(*dir, "user.regfs.digest").value_or("none"), image_.digest);
  EXPECT_EQ(tree().xattr(*must("app/v1/manifest.json"), "user.regfs.mediaType").value_or("none"),
            registry::media_type::kOciManifest);
  EXPECT_FALSE(tree().xattr(*dir, "user.other"));
  EXPECT_FALSE(tree().xattr(*must("app/v1/oci-layout"), "user.regfs.digest"));
  EXPECT_EQ(tree().xattr_names(*dir),
            (std::vector<std::string>{"user.regfs.digest", "user.regfs.mediaType"}));
}

TEST_F(ImageDirTest, AnIndexShowsEveryBlobAndThePlatformsConfig) {
  EXPECT_EQ(tree().xattr(*must("app/multi"), "user.regfs.mediaType").value_or("none"),
            registry::media_type::kOciIndex);
  EXPECT_EQ(open("app/multi/manifest.json"), reg_.manifest("app", index_.digest));
  auto amd64_config = config_of(amd64_.digest);
  auto arm64_config = config_of(arm64_.digest);
  EXPECT_EQ(tree().attr(*must("app/multi/config.json")).size, amd64_config["size"]);
  EXPECT_EQ(nlohmann::json::parse(open("app/multi/config.json"))["architecture"], "amd64");
  auto blobs = fake_.names("app/multi/blobs/sha256");
  for (const std::string digest :
       {index_.digest, amd64_.digest, arm64_.digest, amd64_config["digest"].get<std::string>(),
        arm64_config["digest"].get<std::string>()}) {
    EXPECT_EQ(blobs.count(hex(digest)), 1u) << digest;
  }
  EXPECT_EQ(blobs.size(), 7u) << "the index, 2 manifests, 2 configs, 2 layers";
}

// The same index seen from a platform it lacks: no config, no rootfs/.
class NoPlatformTest : public ImageDirTest {
 protected:
  NoPlatformTest() : ImageDirTest({"linux", "s390x", ""}) {}
};

TEST_F(NoPlatformTest, AnIndexWithoutThePlatformHasNoConfigNorRootfs) {
  EXPECT_EQ(fake_.listing(*must("app/multi")),
            (std::vector<std::string>{"blobs", "index.json", "manifest.json", "oci-layout"}));
  EXPECT_EQ(at("app/multi/config.json"), nullptr);
  EXPECT_EQ(at("app/multi/rootfs"), nullptr);
  EXPECT_EQ(fake_.names("app/multi/blobs/sha256").size(), 7u) << "every blob is still there";
  EXPECT_EQ(tree().image_rootfs(kRegistry, "app", index_.digest), nullptr);
}

TEST_F(ImageDirTest, AMissingManifestIsNotFound) {
  reg_.put_tag("app", "broken", "sha256:" + std::string(64, 'b'));
  auto broken = at("app/broken");
  ASSERT_NE(broken, nullptr) << "the tag is listed";
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().list(*broken); }), ErrorKind::kNotFound);
  EXPECT_EQ(FakeTree::kind_thrown([&] { at("app/broken/config.json"); }), ErrorKind::kNotFound);
}

TEST_F(ImageDirTest, ADigestDirectoryIsServedOnceLoadedWhileTheRegistryIsDown) {
  auto pinned = must("app/" + image_.digest + "/manifest.json");
  auto manifest = read_all(tree().open(*pinned));
  auto tag_file = must("app/v1/manifest.json");
  reg_.down = ErrorKind::kUnavailable;
  EXPECT_EQ(read_all(tree().open(*pinned)), manifest) << "the image is kept by digest";
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().attr(*tag_file); }), ErrorKind::kUnavailable)
      << "a tag is asked again (a cached answer is the source's to give)";
}

TEST_F(ImageDirTest, TheStatusFileIsTheSourcesDocument) {
  fake_.staged.tag_states = {{"reg.test:5000/app:new", "staged"}};
  auto status = must(std::string(kControlDirName) + "/status");
  EXPECT_EQ(read_all(tree().open(*status)), "{\"what\":\"reg.test:5000\"}");
  EXPECT_EQ(fake_.source.status_staged, fake_.staged.tag_states);
}

TEST_F(ImageDirTest, DirectoriesCannotBeOpenedNorFilesListed) {
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().open(*must("app/v1")); }), ErrorKind::kInvalid);
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().list(*must("app/v1/oci-layout")); }),
            ErrorKind::kInvalid);
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().readlink(*must("app/v1/oci-layout")); }),
            ErrorKind::kInvalid);
}

}  // namespace
}  // namespace regfs::fs
