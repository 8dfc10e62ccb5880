"""Issue 17, item 2: a plain layer is kept as its compressed blob plus access
points (cache/layer_store.h), not as an uncompressed copy. Through a real
mount of a real docker-registry: files of a big gzip layer read at random
offsets and sizes through rootfs/ (across access points, from a fresh mount
and from a remount that reuses the stored points) equal the files, and the
cache after indexing holds about the compressed size of the image. A
single-frame zstd layer cannot be resumed mid-frame and keeps a copy."""

import json
import os
import random

import pytest

from harness import reglib, start_registry
from regfs_scripts import mkimage

MIB = 1 << 20
TEXT_MIB = 24
RANDOM_BYTES = 6 * MIB + 12345


def text(size, seed):
    """Compressible, varied bytes: lines of numbered words."""
    rng = random.Random(seed)
    words = [f"word{n}" for n in range(4000)]
    out, total = [], 0
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + "\n"
        out.append(line)
        total += len(line)
    return "".join(out)[:size]


BIG_TEXT = text(TEXT_MIB * MIB, 3)


def layers(compression):
    return [{"compression": compression, "entries": [
        {"path": "etc", "type": "dir", "mode": 0o755},
        {"path": "etc/os-release", "content": "NAME=lean\n", "mode": 0o644},
        {"path": "big.txt", "content": BIG_TEXT, "mode": 0o644},
        {"path": "random.bin", "size": RANDOM_BYTES, "seed": 11, "mode": 0o644},
        {"path": "last", "content": "the end\n", "mode": 0o644},
    ]}]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "lean", samples=[])
    for compression in ("gzip", "zstd"):
        layout = tmp_path_factory.mktemp(f"lean-{compression}")
        mkimage.build(str(layout), "v1", {"format": "oci", "layers": layers(compression)})
        mkimage.push(str(layout), "v1", f"{r.host}/lean/{compression}:v1")
    yield r
    reglib.stop(r.dir)


def blob_sizes(m, repository):
    manifest = json.loads((m / repository / "v1/manifest.json").read_text())
    return sum(d["size"] for d in manifest["layers"]) + manifest["config"]["size"]


def cache_bytes(cache_dir):
    """Bytes of the files under cache_dir (its log aside)."""
    total = 0
    for root, _, files in os.walk(cache_dir):
        for f in files:
            if not f.endswith(".log"):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def check_random_reads(rootfs, seed):
    rng = random.Random(seed)
    big = BIG_TEXT.encode()
    with open(rootfs / "big.txt", "rb") as f:
        for i in range(150):
            offset = rng.randrange(len(big) + 100)
            size = rng.randint(1, 3 * MIB if i % 10 == 0 else 200000)
            f.seek(offset)
            assert f.read(size) == big[offset:offset + size], (offset, size)
    expected = mkimage.RandomReader(RANDOM_BYTES, 11).read(RANDOM_BYTES)
    with open(rootfs / "random.bin", "rb") as f:
        for _ in range(60):
            offset = rng.randrange(RANDOM_BYTES)
            size = rng.randint(1, 400000)
            f.seek(offset)
            assert f.read(size) == expected[offset:offset + size], (offset, size)
    assert (rootfs / "last").read_text() == "the end\n"


def test_random_reads_of_a_gzip_layer_across_access_points(mount, registry, tmp_path):
    cache = tmp_path / "cache"
    m = mount(registry.host, "--cache-dir", cache)
    rootfs = m / "lean/gzip/v1/rootfs"
    assert (rootfs / "etc/os-release").read_text() == "NAME=lean\n"
    check_random_reads(rootfs, 1)
    with open(rootfs / "big.txt", "rb") as f:  # in order, as cat does
        assert f.read() == BIG_TEXT.encode()
    # No uncompressed copy: the index (with its access points) only.
    kept = sorted(p.suffix for p in (cache / "layers/sha256").iterdir())
    assert kept == [".index"]
    m.unmount()
    again = mount(registry.host, "--cache-dir", cache)
    check_random_reads(again / "lean/gzip/v1/rootfs", 2)


def test_the_cache_holds_about_the_compressed_image(mount, registry, tmp_path):
    cache = tmp_path / "cache"
    m = mount(registry.host, "--cache-dir", cache)
    os.listdir(m / "lean/gzip/v1/rootfs")  # indexed
    compressed = blob_sizes(m, "lean/gzip")
    kept = cache_bytes(cache)
    assert kept <= 1.15 * compressed, (kept, compressed)
    assert kept >= compressed  # the blob itself is kept


def test_a_single_frame_zstd_layer_keeps_a_copy(mount, registry, tmp_path):
    cache = tmp_path / "cache"
    m = mount(registry.host, "--cache-dir", cache)
    rootfs = m / "lean/zstd/v1/rootfs"
    check_random_reads(rootfs, 3)
    kept = sorted(p.suffix for p in (cache / "layers/sha256").iterdir())
    assert kept == [".index", ".tar"]
