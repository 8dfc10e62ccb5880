"""SPEC §5: eStargz and zstd:chunked layers are read lazily through their
tables of contents. Images are written here from the format descriptions
(regfs_scripts.lazyimage; no tool in Debian writes them) with every entry
kind of test_rootfs, pushed to a real docker-registry and mounted:
  - rootfs/ equals `umoci raw unpack` of the eStargz image (umoci reads it as
    plain gzip) and, for zstd:chunked (which Debian's umoci cannot read),
    umoci's unpack of the gzip twin made of the same tars (a zstd:chunked
    layer decompresses to exactly the original tar);
  - plain gzip layers mixed in the same image keep working;
  - a `cat` of one file fetches a few ranges, not the layer (registry log);
  - a corrupted chunk gives EIO for that file only, and for the reads of
    its range only: the file's other chunks still read;
  - a read of one page of a big file fetches only the chunk covering it;
    readers of one chunk fetch it once; a read whose chunk hangs fails with
    ETIMEDOUT at the request deadline and a later read gets it;
  - the legacy stargz footer (47 bytes, CRFS) is read too;
  - a table that does not match its annotation, is not JSON, or is missing
    (no footer) falls back to reading the layer whole, with one log line,
    and the content is right.
"""

import errno
import gzip
import threading
import time
import io
import json
import os
import re
import subprocess
import tarfile

import pytest

from fault_front import FaultFront
from harness import Mounter, reglib, start_registry
from regfs_scripts import lazyimage, mkimage
from test_rootfs import assert_same, every_type_layers, listing, umoci_unpack

BIG_MIB = 24


@pytest.fixture(scope="module")
def registry(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "lazy", samples=[])
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="module")
def mounter(tmp_path_factory):
    m = Mounter(tmp_path_factory.mktemp("lazy-mounts"))
    yield m
    m.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("lazy-work")


def big_layers(compression="gzip"):
    """A layer with a large random file and a small one, and a gzip layer."""
    return [{"compression": compression, "entries": [
                {"path": "etc", "type": "dir"},
                {"path": "opt/big.bin", "size": BIG_MIB << 20, "seed": 3},
                {"path": "etc/os-release", "content": "NAME=lazy\n"}]},
            {"compression": compression, "entries": [{"path": "etc/hostname", "content": "plain\n"}]}]


# name: (source description's layers, formats per layer, damage)
VARIANTS = {
    "estargz": (every_type_layers, ["estargz"] * 3, None),
    "zstdchunked": (every_type_layers, ["zstd:chunked"] * 3, None),
    "mixed": (every_type_layers, ["estargz", None, "zstd:chunked"], None),
    "big-estargz": (big_layers, ["estargz", None], None),
    "big-zstdchunked": (big_layers, ["zstd:chunked", None], None),
    "bad-digest": (every_type_layers, ["estargz", "zstd:chunked", None],
                   {0: "toc-digest", 1: "toc-digest"}),
    "bad-json": (every_type_layers, ["zstd:chunked", "estargz", None],
                 {0: "toc-json", 1: "toc-json"}),
    "no-table": (every_type_layers, ["estargz", "zstd:chunked", None],
                 {0: "no-table", 1: "toc-digest"}),
    "corrupt": (every_type_layers, ["estargz", "zstd:chunked", None], None),
    "big-corrupt": (big_layers, ["estargz", None], None),
    "stargz-legacy": (every_type_layers, ["stargz", "stargz", "stargz"], None),
}


@pytest.fixture(scope="module")
def images(registry, work):
    """{name: (layout, tag, descriptor)}, each pushed as lazy/<name>:v1; the
    gzip twin of every_type_layers as lazy/gzip:v1."""
    out = {}
    sources = {}
    for make in (every_type_layers, big_layers):
        src = work / f"src-{make.__name__}"
        mkimage.build(str(src), "v1", {"layers": make("gzip")})
        sources[make] = src
    out["gzip"] = (sources[every_type_layers], "v1",
                   mkimage.push(str(sources[every_type_layers]), "v1",
                                f"{registry.host}/lazy/gzip:v1"))
    for name, (make, formats, damage) in VARIANTS.items():
        layout = work / f"layout-{name}"
        top = lazyimage.convert(str(sources[make]), "v1", str(layout), "v1", formats, damage)
        mkimage.push(str(layout), "v1", f"{registry.host}/lazy/{name}:v1")
        out[name] = (layout, "v1", top)
    return out


@pytest.fixture(scope="module")
def mnt(mounter, registry, images):
    return mounter.mount(registry.host)


@pytest.fixture(scope="module")
def gzip_unpack(images, work):
    layout, tag, _ = images["gzip"]
    return listing(umoci_unpack(layout, tag, work / "umoci-gzip"))


def manifest_of(images, name):
    layout, _, top = images[name]
    with open(os.path.join(layout, "blobs", "sha256", top["digest"].split(":", 1)[1])) as f:
        return json.load(f)


def blob_bytes_since(registry, offset, digest):
    """Bytes the registry sent for GETs of blob digest after log offset."""
    total = 0
    with open(registry.info["log"], "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            m = re.search(r'"GET (\S+) HTTP/[\d.]+" (\d+) (\d+)', line)
            if m and digest in m.group(1) and m.group(2) in ("200", "206"):
                total += int(m.group(3))
    return total


def blob_gets_since(registry, offset, digest):
    """GETs of blob digest the registry answered after log offset."""
    with open(registry.info["log"], "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return len([m for m in re.finditer(r'"GET (\S+) HTTP/[\d.]+" (\d+) (\d+)', text)
                if digest in m.group(1) and m.group(2) in ("200", "206")])


def pread(path, offset, size):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


MIB = 1 << 20
BIG = mkimage.RandomReader(BIG_MIB << 20, 3).read()


def test_estargz_rootfs_matches_umoci(mnt, images, work):
    layout, tag, _ = images["estargz"]
    want = listing(umoci_unpack(layout, tag, work / "umoci-estargz"))
    got = listing(mnt / "lazy/estargz/v1/rootfs")
    assert_same(got, want)
    # The properties the comparison rests on, checked outright too.
    assert got["bin/ls"]["hardlinks"] == ["bin/busybox", "bin/cat", "bin/ls", "usr/bin/busybox"]
    assert got["etc/caps"]["xattrs"]["user.mime_type"] == b"text/plain"
    assert "etc/motd" not in got and "usr/share/doc/a" not in got
    assert got["usr/share/big.bin"]["size"] == 3 << 20  # three 1 MiB chunks
    assert "stargz.index.json" in got  # the layers' tar holds it, as umoci shows


@pytest.mark.parametrize("name", ["zstdchunked", "mixed"])
def test_zstd_chunked_and_mixed_match_the_gzip_twin(mnt, images, gzip_unpack, name):
    got = listing(mnt / f"lazy/{name}/v1/rootfs")
    want = dict(gzip_unpack)
    if name == "mixed":  # its eStargz base layer adds its table's tar entry
        assert got.pop("stargz.index.json")["type"] == "file"
    assert_same(got, want)


def test_a_read_only_mount_reads_lazy_layers_by_chunks(mounter, registry, images, gzip_unpack):
    m = mounter.mount(registry.host, "--read-only")  # a cold cache; reads come by inode
    lazy = manifest_of(images, "big-estargz")["layers"][0]
    start = registry.log_offset()
    big = m / "lazy/big-estargz/v1/rootfs/opt/big.bin"
    assert pread(big, 5 * MIB + 7, 4096) == BIG[5 * MIB + 7:5 * MIB + 7 + 4096]
    fetched = blob_bytes_since(registry, start, lazy["digest"])
    assert 0 < fetched < lazy["size"] // 4, f"{fetched} bytes of {lazy['size']} for one page"
    got = listing(m / "lazy/zstdchunked/v1/rootfs")
    assert_same(got, dict(gzip_unpack))


def test_tree_needs_no_layer_download(mnt, registry, images):
    manifest = manifest_of(images, "big-estargz")
    lazy, plain = manifest["layers"]
    start = registry.log_offset()
    assert sorted(os.listdir(mnt / "lazy/big-estargz/v1/rootfs/etc")) == ["hostname",
                                                                          "os-release"]
    fetched = blob_bytes_since(registry, start, lazy["digest"])
    assert 0 < fetched < lazy["size"] // 4, f"{fetched} bytes of {lazy['size']} for the tree"
    assert blob_bytes_since(registry, start, plain["digest"]) == plain["size"]


@pytest.mark.parametrize("name", ["big-estargz", "big-zstdchunked"])
def test_cat_of_one_file_fetches_ranges_not_the_layer(mounter, registry, images, name):
    m = mounter.mount(registry.host)  # a cold cache
    lazy = manifest_of(images, name)["layers"][0]
    start = registry.log_offset()
    assert (m / f"lazy/{name}/v1/rootfs/etc/os-release").read_text() == "NAME=lazy\n"
    fetched = blob_bytes_since(registry, start, lazy["digest"])
    assert 0 < fetched < lazy["size"] // 4, f"{fetched} bytes of {lazy['size']} for one file"
    # The large file reads right, chunk by verified chunk.
    data = (m / f"lazy/{name}/v1/rootfs/opt/big.bin").read_bytes()
    assert len(data) == BIG_MIB << 20
    assert data == mkimage.RandomReader(BIG_MIB << 20, 3).read()


@pytest.mark.parametrize("name", ["bad-digest", "bad-json", "no-table"])
def test_a_wrong_table_falls_back_to_the_whole_layer(mounter, registry, images, gzip_unpack,
                                                     name):
    m = mounter.mount(registry.host)
    root = m / f"lazy/{name}/v1/rootfs"
    got = listing(root)
    got.pop("stargz.index.json", None)  # an eStargz layer's table entry, read whole
    assert_same(got, gzip_unpack)
    log = (m.cache_dir / "regfs.log").read_text()
    for layer in manifest_of(images, name)["layers"][:2]:
        lines = [ln for ln in log.splitlines()
                 if "Cannot read layer " + layer["digest"] + " lazily" in ln]
        assert len(lines) == 1, log[-3000:]
    listing(root)  # looked at again: no second log line
    log = (m.cache_dir / "regfs.log").read_text()
    assert log.count("lazily: ") == 2


def test_corrupted_chunk_gives_eio_for_that_file_only(mounter, registry, images):
    layout, _, _ = images["corrupt"]
    manifest = manifest_of(images, "corrupt")
    # Flip bytes inside the compressed chunk of bin/su (eStargz layer 0) and
    # of usr/share/doc/b (zstd:chunked layer 1) in the registry's storage.
    targets = {0: ("bin/su", "bin/su"), 1: ("usr/share/doc/b", "usr/share/doc/b")}
    for index, (name, _) in targets.items():
        layer = manifest["layers"][index]
        hexd = layer["digest"].split(":", 1)[1]
        with open(os.path.join(layout, "blobs", "sha256", hexd), "rb") as f:
            blob = f.read()
        toc = _table(blob, layer)
        entry = next(e for e in toc["entries"] if e["name"] == name)
        path = os.path.join(registry.dir, "data", "docker", "registry", "v2", "blobs",
                            "sha256", hexd[:2], hexd, "data")
        with open(path, "r+b") as f:
            f.seek(entry["offset"] + 12)
            byte = f.read(1)
            f.seek(entry["offset"] + 12)
            f.write(bytes([byte[0] ^ 0xFF]))
    m = mounter.mount(registry.host)
    root = m / "lazy/corrupt/v1/rootfs"
    for name in ("bin/su", "usr/share/doc/b"):
        with pytest.raises(OSError) as e:
            (root / name).read_bytes()
        assert e.value.errno == errno.EIO, name
    assert (root / "bin/busybox").read_text() == "#!/bin/sh\necho busybox\n"
    assert (root / "etc/os-release").read_text() == "NAME=top\n"
    assert (root / "usr/share/doc/sub").exists() is False  # opaque in layer 1
    assert len((root / "usr/share/big.bin").read_bytes()) == 3 << 20


def _table(blob, layer):
    """The table of contents of a layer blob this test wrote."""
    notes = layer["annotations"]
    if lazyimage.ESTARGZ_TOC_DIGEST in notes:
        offset = int(blob[-51:][16:32], 16)
        tar = gzip.decompress(blob[offset:-51])
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            return json.load(t.extractfile(lazyimage.TOC_NAME))
    off, length, _, _ = map(int, notes[lazyimage.ZSTD_POSITION].split(":"))
    out = subprocess.run(["zstd", "-dc"], input=blob[off:off + length], capture_output=True,
                         check=True).stdout
    return json.loads(out)


def test_an_estargz_build_is_read_lazily_by_a_fresh_mount(mounter, registry, work, run_regfs):
    """--layer-compression estargz: a build's layer is eStargz with its table
    annotation; a fresh mount reads it through the table, and its rootfs/
    equals umoci's unpack of the pushed image."""
    app = work / "estargz-app"
    (app / "bin").mkdir(parents=True)
    (app / "bin/hello").write_text("#!/bin/sh\necho hello\n")
    os.chmod(app / "bin/hello", 0o755)
    os.symlink("hello", app / "bin/hi")
    os.link(app / "bin/hello", app / "bin/hello-again")
    (app / "empty").write_bytes(b"")
    (app / "big.bin").write_bytes(mkimage.RandomReader(10 << 20, 5).read())  # 3 chunks
    os.setxattr(app / "empty", "user.note", b"x")
    m = mounter.mount(registry.host, "--push-delay", "600", "--layer-compression", "estargz")
    os.makedirs(m / "lazy/built")
    proc = subprocess.run(["cp", "-r", "--preserve=mode,timestamps,links,xattr", str(app),
                           str(m / "lazy/built/v1")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = run_regfs("push", m / "lazy/built/v1")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(registry.client.manifest("lazy/built", "v1")[0])
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer["annotations"][lazyimage.ESTARGZ_TOC_DIGEST].startswith("sha256:")

    fresh = mounter.mount(registry.host)
    start = registry.log_offset()
    rootfs = fresh / "lazy/built/v1/rootfs"
    assert (rootfs / "bin/hello").read_text() == "#!/bin/sh\necho hello\n"
    fetched = blob_bytes_since(registry, start, layer["digest"])
    assert 0 < fetched < layer["size"] // 2, f"{fetched} bytes of {layer['size']}"
    assert "Reading layer " + layer["digest"] + " lazily" in \
        (fresh.cache_dir / "regfs.log").read_text()
    layout = work / "estargz-built"
    proc = subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                           f"docker://{registry.host}/lazy/built:v1", f"oci:{layout}:v1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    want = listing(umoci_unpack(layout, "v1", work / "umoci-estargz-built"))
    assert_same(listing(rootfs), want)
    assert listing(rootfs)["big.bin"]["size"] == 10 << 20


def test_rootfs_of_a_staged_copy_of_a_lazy_image_is_writable(mounter, registry, images,
                                                              run_regfs):
    """A file of a lazy layer is copied up (its verified bytes) when changed
    in rootfs/ of a staged copy; the push adds one layer on the lazy ones."""
    m = mounter.mount(registry.host, "--push-delay", "600")
    os.makedirs(m / "lazy/edited")
    proc = subprocess.run(["cp", "-r", str(m / "lazy/mixed/v1"), str(m / "lazy/edited/v1")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    root = m / "lazy/edited/v1/rootfs"
    with open(root / "bin/busybox", "a") as f:  # in the eStargz base layer
        f.write("echo appended\n")
    long_gnu = "usr/share/gnu-" + "g" * 120  # in the zstd:chunked top layer
    with open(root / long_gnu, "a") as f:
        f.write("appended\n")
    proc = run_regfs("push", m / "lazy/edited/v1")
    assert proc.returncode == 0, proc.stderr
    fresh = mounter.mount(registry.host)
    rootfs = fresh / "lazy/edited/v1/rootfs"
    assert (rootfs / "bin/busybox").read_text() == "#!/bin/sh\necho busybox\necho appended\n"
    assert (rootfs / long_gnu).read_text() == "GNU long name\nappended\n"
    assert (rootfs / "etc/os-release").read_text() == "NAME=top\n"
    base = manifest_of(images, "mixed")["layers"]
    pushed = json.loads(registry.client.manifest("lazy/edited", "v1")[0])["layers"]
    assert pushed[:3] == base and len(pushed) == 4


@pytest.mark.parametrize("name", ["big-estargz", "big-zstdchunked"])
def test_a_page_read_fetches_only_its_chunk(mounter, registry, images, name):
    """dd bs=4k skip=N count=1 of a 24-chunk file: one range, about one
    chunk's bytes, not the file."""
    m = mounter.mount(registry.host)
    big = m / f"lazy/{name}/v1/rootfs/opt/big.bin"
    assert big.stat().st_size == BIG_MIB << 20  # the tree: footer and table
    lazy = manifest_of(images, name)["layers"][0]
    start = registry.log_offset()
    skip = 5 * 256 + 100  # 4 KiB pages: in chunk 5 (1 MiB chunks)
    proc = subprocess.run(["dd", f"if={big}", "bs=4k", f"skip={skip}", "count=1",
                           "status=none"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == BIG[skip * 4096:(skip + 1) * 4096]
    fetched = blob_bytes_since(registry, start, lazy["digest"])
    assert blob_gets_since(registry, start, lazy["digest"]) == 1
    assert MIB // 2 < fetched < MIB + MIB // 4, f"{fetched} bytes for one page"
    # The same chunk again (another page of it): nothing more is fetched.
    assert pread(big, 5 * MIB + 800 * 1024, 4096) == BIG[5 * MIB + 800 * 1024:][:4096]
    assert blob_gets_since(registry, start, lazy["digest"]) == 1


def test_readers_of_one_chunk_fetch_it_once(mounter, registry, images):
    m = mounter.mount(registry.host)
    big = m / "lazy/big-zstdchunked/v1/rootfs/opt/big.bin"
    assert big.stat().st_size == BIG_MIB << 20
    lazy = manifest_of(images, "big-zstdchunked")["layers"][0]
    start = registry.log_offset()
    # Eight opens reading eight pages of chunk 9 at once: separate READs.
    offsets = [9 * MIB + i * 128 * 1024 for i in range(8)]
    results = {}
    barrier = threading.Barrier(len(offsets))

    def reader(offset):
        fd = os.open(big, os.O_RDONLY)
        try:
            barrier.wait()
            results[offset] = os.pread(fd, 4096, offset)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=reader, args=(o,)) for o in offsets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for offset in offsets:
        assert results[offset] == BIG[offset:offset + 4096]
    assert blob_gets_since(registry, start, lazy["digest"]) == 1


def test_a_corrupted_chunk_fails_only_the_reads_of_its_range(mounter, registry, images):
    """Chunk 10 of opt/big.bin flipped in the registry: reads in it are EIO,
    reads of the file's other chunks still return the right bytes."""
    layout, _, _ = images["big-corrupt"]
    layer = manifest_of(images, "big-corrupt")["layers"][0]
    hexd = layer["digest"].split(":", 1)[1]
    with open(os.path.join(layout, "blobs", "sha256", hexd), "rb") as f:
        toc = _table(f.read(), layer)
    chunk = next(e for e in toc["entries"]
                 if e["name"] == "opt/big.bin" and e.get("chunkOffset") == 10 * MIB)
    path = os.path.join(registry.dir, "data", "docker", "registry", "v2", "blobs", "sha256",
                        hexd[:2], hexd, "data")
    with open(path, "r+b") as f:
        f.seek(chunk["offset"] + 5000)
        byte = f.read(1)
        f.seek(chunk["offset"] + 5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    m = mounter.mount(registry.host)
    big = m / "lazy/big-corrupt/v1/rootfs/opt/big.bin"
    for offset in (10 * MIB, 10 * MIB + 512 * 1024):
        with pytest.raises(OSError) as e:
            pread(big, offset, 4096)
        assert e.value.errno == errno.EIO
    for offset in (0, 9 * MIB + 4096, 11 * MIB, (BIG_MIB - 1) * MIB):
        assert pread(big, offset, 4096) == BIG[offset:offset + 4096], offset
    with pytest.raises(OSError) as e:
        big.read_bytes()
    assert e.value.errno == errno.EIO
    assert "Cannot use a chunk of layer " + layer["digest"] in \
        (m.cache_dir / "regfs.log").read_text()


def test_a_read_whose_chunk_hangs_times_out_and_a_later_read_gets_it(mounter, registry,
                                                                      images):
    front = FaultFront(registry.url).start()
    try:
        m = mounter.mount(front.host, "-o", "request_timeout=3")
        big = m / "lazy/big-estargz/v1/rootfs/opt/big.bin"
        assert big.stat().st_size == BIG_MIB << 20
        lazy = manifest_of(images, "big-estargz")["layers"][0]
        front.add("hang", path=lazy["digest"])
        began = time.monotonic()
        with pytest.raises(OSError) as e:
            pread(big, 7 * MIB, 4096)
        took = time.monotonic() - began
        assert e.value.errno == errno.ETIMEDOUT
        assert took < 3 + 5, f"{took:.1f} s for a 3 s deadline"
        front.clear()  # the hanging request is cut: the fetch tries again
        # A later read gets the chunk (once regfs sees the registry up again,
        # if the cut request had it marked down).
        deadline = time.monotonic() + 45
        while True:
            try:
                got = pread(big, 7 * MIB, 4096)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        assert got == BIG[7 * MIB:7 * MIB + 4096]
        assert pread(big, 12 * MIB, 4096) == BIG[12 * MIB:12 * MIB + 4096]
    finally:
        front.stop()


def test_legacy_stargz_footer_is_read_lazily(mnt, images, gzip_unpack, registry):
    """A legacy stargz layer (47-byte footer, files without chunk digests,
    read and verified whole) reads through its table and equals umoci."""
    got = listing(mnt / "lazy/stargz-legacy/v1/rootfs")
    assert got.pop("stargz.index.json")["type"] == "file"
    assert_same(got, gzip_unpack)
    log = (mnt.cache_dir / "regfs.log").read_text()
    for layer in manifest_of(images, "stargz-legacy")["layers"]:
        assert "Reading layer " + layer["digest"] + " lazily (eStargz)" in log
        assert "Cannot read layer " + layer["digest"] not in log


def test_a_lazy_image_read_before_reads_with_the_registry_down_after_a_remount(mounter, registry):
    """The table of contents is kept in the cache with the chunks: a later
    mount of the same cache serves what was read with no registry at all."""
    front = FaultFront(registry.url).start()
    try:
        m = mounter.mount(front.host, "-o", "request_timeout=5")
        root = m / "lazy/big-estargz/v1/rootfs"
        assert (root / "etc/os-release").read_text() == "NAME=lazy\n"
        assert pread(root / "opt/big.bin", 7 * MIB, 4096) == BIG[7 * MIB:7 * MIB + 4096]
        m.unmount()
    finally:
        front.stop()  # the registry is gone for the next mount
    proc = subprocess.run(m.argv, env=m.env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    try:
        assert proc.returncode == 0, proc.stderr
        assert (root / "etc/os-release").read_text() == "NAME=lazy\n"
        assert pread(root / "opt/big.bin", 7 * MIB, 4096) == BIG[7 * MIB:7 * MIB + 4096]
        with pytest.raises(OSError):  # never read: not in the cache
            pread(root / "opt/big.bin", 20 * MIB, 4096)
    finally:
        m.unmount()
