"""SPEC §5: <image>/rootfs/ is the image's layers applied in order, exactly as
`umoci raw unpack` leaves them on disk. Images built here (every entry type,
several layers, gzip, zstd and uncompressed, OCI and Docker media types) and a
real Debian root filesystem (debootstrap, cached under ~/.cache/regfs-test)
are pushed to a real docker-registry; a normalized listing of the mount's
rootfs/ (type, mode, owner, size, content hash, link target, device numbers,
hardlink groups, xattrs, mtime) must equal the listing of umoci's unpack.
umoci 0.4.7 cannot read zstd layers, so a zstd image is compared with the
unpack of its gzip twin, built from the same tar entries, and so is an image
with Docker media types."""

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import Mounter, has_tool, reglib, start_registry
from regfs_scripts import mkimage

CACHE = Path(os.environ.get("REGFS_TEST_CACHE", str(Path.home() / ".cache" / "regfs-test")))
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("REGFS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BIG = 3 << 20  # bytes of the large random file


def _d(path, mode=0o755, **kw):
    return {"path": path, "type": "dir", "mode": mode, **kw}


def _f(path, content="", mode=0o644, **kw):
    return {"path": path, "content": content, "mode": mode, **kw}


def every_type_layers(compression):
    """Three layers with every entry type and merge rule; the last in GNU format."""
    deep = "usr/share/deep/" + "/".join(["d" * 40] * 3)
    long_gnu = "usr/share/gnu-" + "g" * 120
    base = [
        _d("bin"), _d("etc", mtime=1600000000), _d("usr"), _d("usr/lib"),
        _d("usr/share", xattrs={"user.dir": "d"}),
        _d("usr/share/doc"), _d("usr/share/doc/sub"), _d("tmp", 0o1777), _d("dev"), _d("run"),
        _d("srv", 0o2775, uid=1000, gid=1000), _d("opt"), _d("opt/thing"),
        _d("usr/share/deep"), _d("usr/share/deep/" + "d" * 40),
        _d("usr/share/deep/" + "/".join(["d" * 40] * 2)), _d(deep),
        _f("bin/busybox", "#!/bin/sh\necho busybox\n", 0o755),
        {"path": "bin/ls", "type": "hardlink", "target": "bin/busybox"},
        {"path": "bin/cat", "type": "hardlink", "target": "/bin/busybox"},
        _f("bin/su", "su\n", 0o4755), _f("bin/wall", "wall\n", 0o2755, gid=5),
        {"path": "bin/sh", "type": "symlink", "target": "busybox"},
        {"path": "lib", "type": "symlink", "target": "usr/lib"},
        {"path": "etc/abs", "type": "symlink", "target": "/etc/os-release"},
        {"path": "etc/dangling", "type": "symlink", "target": "/nonexistent/x"},
        _f("etc/os-release", "NAME=base\n", mtime=1500000000),
        _f("etc/motd", "removed later\n"), _f("etc/shadow", "root:*:\n", 0o640, gid=42),
        _f("etc/caps", "x", xattrs={"user.mime_type": "text/plain", "trusted.regfs": "t"}),
        {"path": "dev/null", "type": "char", "major": 1, "minor": 3, "mode": 0o666},
        {"path": "dev/sda", "type": "block", "major": 8, "minor": 0, "mode": 0o660, "gid": 6},
        {"path": "run/initctl", "type": "fifo", "mode": 0o600},
        _f("usr/share/doc/a", "a\n"), _f("usr/share/doc/b", "old b\n"),
        _f("usr/share/doc/sub/c", "c\n"),
        _f("usr/share/" + "l" * 150, "PAX long name\n"),
        _f(deep + "/file", "deep\n"),
        {"path": "usr/share/longlink", "type": "symlink", "target": "/" + "t" * 200},
        {"path": "usr/share/big.bin", "size": BIG, "seed": 7},
        _f("opt/thing/inside", "gone when thing becomes a file\n"),
        _f("srv/data", "a file, then a directory\n"),
        _f("../escape", "confined\n"), _f("/abs", "confined too\n"),
        _f("usr/share/empty", ""),
    ]
    middle = [
        {"path": "etc/motd", "type": "whiteout"},
        {"path": "usr/share/doc", "type": "opaque"},
        _f("usr/share/doc/b", "new b\n"),
        _f("etc/os-release", "NAME=top\n", mtime=1700000000),
        _f("lib/libz.so.1", "through the lib symlink\n", 0o755),
        _d("usr/bin"),
        {"path": "usr/bin/busybox", "type": "hardlink", "target": "bin/busybox"},
        _f("opt/thing", "now a file\n"),
        _d("srv/data", 0o700, uid=33, gid=33), _f("srv/data/x", "x\n", uid=33, gid=33),
        _d("etc", 0o750, mtime=1650000000, xattrs={"user.etc": "v2"}),
    ]
    top = [
        _f(long_gnu, "GNU long name\n"),
        {"path": "usr/share/gnulink", "type": "symlink", "target": "x" * 150},
        {"path": "usr/share/gnu-hard", "type": "hardlink", "target": long_gnu},
        {"path": "opt", "type": "whiteout"},
        {"path": "dev/zero", "type": "char", "major": 1, "minor": 5, "mode": 0o666},
    ]
    return [{"compression": compression, "entries": base},
            {"compression": compression, "entries": middle},
            {"compression": compression, "entries": top, "tar_format": "gnu"}]


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo")):
        if test(mode):
            return name
    return oct(stat.S_IFMT(mode))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def listing(root):
    """{path: properties} of everything under root (root itself excluded),
    with hardlink groups as the sorted paths sharing an inode."""
    entries, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = _kind(st.st_mode)
            e = {"type": kind, "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns}
            if kind != "symlink":
                e["mode"] = oct(stat.S_IMODE(st.st_mode))
            if kind == "file":
                e["size"] = st.st_size
                e["sha256"] = _sha256(path)
            elif kind == "symlink":
                e["link"] = os.readlink(path)
                e["size"] = st.st_size
            elif kind in ("char", "block"):
                e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if kind != "dir":
                e["nlink"] = st.st_nlink
                inodes.setdefault(st.st_ino, []).append(rel)
                e["ino"] = st.st_ino
            e["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False)
                           for k in sorted(os.listxattr(path, follow_symlinks=False))}
            entries[rel] = e
    for e in entries.values():
        if "ino" in e:
            e["hardlinks"] = sorted(inodes[e.pop("ino")])
    return entries


def assert_same(got, want):
    """Like got == want, with a readable account of the first differences."""
    if got == want:
        return
    lines = []
    for path in sorted(set(got) | set(want)):
        if got.get(path) != want.get(path):
            lines.append(f"{path}:\n  regfs: {got.get(path)}\n  umoci: {want.get(path)}")
    pytest.fail(f"{len(lines)} paths differ:\n" + "\n".join(lines[:25]))


def umoci_unpack(layout, tag, out):
    out = Path(out)
    if not out.exists():
        proc = subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:{tag}", str(out)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"umoci raw unpack {layout}:{tag} failed: {proc.stderr[-2000:]}")
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "rootfs", samples=[])
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="module")
def mounter(tmp_path_factory):
    m = Mounter(tmp_path_factory.mktemp("rootfs-mounts"))
    yield m
    m.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("rootfs-work")


@pytest.fixture(scope="module")
def images(registry, work):
    """Every test image pushed: {name: (layout, tag, descriptor)}."""
    out = {}
    variants = [("gzip", "oci", "gzip"), ("zstd", "oci", "zstd"), ("none", "oci", "none"),
                ("docker", "docker", "gzip")]
    for name, fmt, compression in variants:
        layout = work / f"layout-{name}"
        desc = {"format": fmt, "layers": every_type_layers(compression)}
        mkimage.build(str(layout), name, desc)
        top = mkimage.push(str(layout), name, f"{registry.host}/every/types:{name}")
        out[name] = (layout, name, top)
    return out


@pytest.fixture(scope="module")
def mnt(mounter, registry, images):
    return mounter.mount(registry.host)


@pytest.fixture(scope="module")
def gzip_unpack(images, work):
    layout, tag, _ = images["gzip"]
    return listing(umoci_unpack(layout, tag, work / "umoci-gzip"))


@pytest.mark.parametrize("variant", ["gzip", "zstd", "none", "docker"])
def test_every_entry_type_matches_umoci(mnt, images, work, gzip_unpack, variant):
    layout, tag, _ = images[variant]
    if variant in ("zstd", "docker"):
        # umoci 0.4.7 reads neither zstd nor Docker media types: the gzip twin
        # is built from the same tars.
        want = gzip_unpack
    else:
        want = listing(umoci_unpack(layout, tag, work / f"umoci-{variant}"))
    got = listing(mnt / "every/types" / tag / "rootfs")
    assert_same(got, want)
    # The properties the comparison rests on, checked outright too.
    assert got["bin/ls"]["hardlinks"] == ["bin/busybox", "bin/cat", "bin/ls", "usr/bin/busybox"]
    assert got["bin/ls"]["nlink"] == 4
    assert got["usr/lib/libz.so.1"]["type"] == "file"
    assert got["dev/null"]["rdev"] == (1, 3)
    assert got["bin/su"]["mode"] == "0o4755"
    assert got["etc/caps"]["xattrs"]["user.mime_type"] == b"text/plain"
    assert "etc/motd" not in got and "opt" not in got and "usr/share/doc/a" not in got
    assert got["escape"]["type"] == "file" and got["abs"]["type"] == "file"


@pytest.fixture(scope="module")
def ro_mnt(mounter, registry, images):
    return mounter.mount(registry.host, "--read-only")


@pytest.mark.parametrize("variant", ["gzip", "zstd", "none", "docker"])
def test_a_read_only_mount_shows_the_same_rootfs(mnt, ro_mnt, images, variant):
    # Read by inode (no OPEN): layers decompressed, spliced (none) and lazy
    # alike. Read twice: the second pass comes from the pages the kernel kept.
    _, tag, _ = images[variant]
    want = listing(mnt / "every/types" / tag / "rootfs")
    for _ in range(2):
        assert_same(listing(ro_mnt / "every/types" / tag / "rootfs"), want)


def test_rootfs_is_not_listed_but_reachable(mnt, images):
    d = mnt / "every/types/gzip"
    assert "rootfs" not in os.listdir(d)
    assert (d / "rootfs").is_dir()
    assert os.readlink(d / "rootfs/bin/sh") == "busybox"
    assert os.readlink(d / "rootfs/usr/share/longlink") == "/" + "t" * 200
    assert (d / "rootfs/etc/os-release").read_text() == "NAME=top\n"


def test_digest_directory_shows_the_same_rootfs(mnt, images):
    _, tag, top = images["zstd"]
    by_tag = listing(mnt / "every/types" / tag / "rootfs")
    by_digest = listing(mnt / "every/types" / top["digest"] / "rootfs")
    assert by_digest == by_tag


def test_reads_are_random_access_without_refetching(mnt, images, registry):
    _, tag, _ = images["none"]
    rootfs = mnt / "every/types" / tag / "rootfs"
    expected = mkimage.RandomReader(BIG, 7).read(BIG)
    os.listdir(rootfs)  # indexed
    offset = registry.log_offset()
    with open(rootfs / "usr/share/big.bin", "rb") as f:
        f.seek(BIG - 100000)
        assert f.read(5000) == expected[BIG - 100000:BIG - 95000]
        f.seek(12345)
        assert f.read(100) == expected[12345:12445]
    assert registry.blob_gets_since(offset) == []


def test_a_remount_reuses_the_layer_indexes(mounter, registry, images, tmp_path):
    cache = tmp_path / "shared-cache"
    first = mounter.mount(registry.host, "--cache-dir", cache)
    want = listing(first / "every/types/gzip/rootfs")
    first.unmount()
    indexes = sorted(p.name for p in (cache / "layers" / "sha256").iterdir())
    assert len([n for n in indexes if n.endswith(".index")]) == 3
    offset = registry.log_offset()
    second = mounter.mount(registry.host, "--cache-dir", cache)
    assert listing(second / "every/types/gzip/rootfs") == want
    layers = {d["digest"] for d in json.loads(
        (second / "every/types/gzip/manifest.json").read_text())["layers"]}
    assert not layers & set(registry.blob_gets_since(offset))


def test_multi_platform_tag_shows_the_selected_platform(mounter, registry, work):
    layout = work / "layout-multi"
    mkimage.build(str(layout), "multi", mkimage.preset("multi"))
    mkimage.push(str(layout), "multi", f"{registry.host}/every/multi:1")
    arm = mounter.mount(registry.host, "--platform", "linux/arm64")
    amd = mounter.mount(registry.host, "--platform", "linux/amd64")
    assert "ARCH=arm64" in (arm / "every/multi/1/rootfs/etc/os-release").read_text()
    assert "ARCH=amd64" in (amd / "every/multi/1/rootfs/etc/os-release").read_text()


def _rewrite_config(layout, tag, new_tag, change):
    """Tags in layout a copy of tag's image whose config (and its media type)
    `change` edits; returns the new manifest's descriptor."""
    blobs = Path(layout) / "blobs" / "sha256"
    top = mkimage.tagged(str(layout), tag)
    manifest = json.loads((blobs / top["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    media_type = change(config)
    lay = mkimage.Layout(str(layout))
    digest, size = lay.put_bytes(json.dumps(config, separators=(",", ":")).encode())
    manifest["config"] = {"mediaType": media_type or manifest["config"]["mediaType"],
                          "digest": digest, "size": size}
    digest, size = lay.put_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    desc = {"mediaType": top["mediaType"], "digest": digest, "size": size}
    lay.tag(new_tag, desc)
    return desc


def test_diff_id_mismatch_fails_with_eio(mounter, registry, work):
    layout = work / "layout-bad"
    mkimage.build(str(layout), "good", mkimage.preset("alpine-like"))

    def corrupt(config):
        config["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64

    _rewrite_config(layout, "good", "bad", corrupt)
    mkimage.push(str(layout), "bad", f"{registry.host}/every/bad:1")
    m = mounter.mount(registry.host)
    with pytest.raises(OSError) as e:
        os.listdir(m / "every/bad/1/rootfs")
    assert e.value.errno == errno.EIO
    assert list((m.cache_dir / "layers" / "tmp").iterdir()) == []
    assert not any(p.name.startswith("0" * 64) for p in (m.cache_dir / "layers/sha256").iterdir())
    log = (m.cache_dir / "regfs.log").read_text()
    assert "diff_id" in log and "sha256:" + "0" * 64 in log
    assert (m / "every/bad/1/manifest.json").is_file()  # the mount stays up


def test_a_non_image_artifact_has_no_rootfs(mounter, registry, work):
    layout = work / "layout-artifact"
    mkimage.build(str(layout), "image", mkimage.preset("hello"))
    _rewrite_config(layout, "image", "artifact",
                    lambda config: "application/vnd.example.thing.config.v1+json")
    mkimage.push(str(layout), "artifact", f"{registry.host}/every/artifact:1")
    m = mounter.mount(registry.host)
    with pytest.raises(OSError) as e:
        os.stat(m / "every/artifact/1/rootfs")
    assert e.value.errno == errno.EOPNOTSUPP


# A real Debian root filesystem.

@pytest.fixture(scope="session")
def debian_root():
    target = CACHE / f"debian-{DEBIAN_SUITE}"
    if (target / "etc" / "os-release").exists():
        return target
    if not has_tool("debootstrap"):
        pytest.fail("debootstrap is missing: run scripts/install-deps")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(tmp),
                           DEBIAN_MIRROR], capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        pytest.fail(f"debootstrap failed: {proc.stderr[-2000:]}")
    os.rename(tmp, target)
    return target


def _debian_tars(root, out):
    """Three layers: the base system (PAX), usr/share (GNU format), var plus a
    whiteout and an opaque directory with part of what it hid put back."""
    paths = [["."], [], []]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            layer = 1 if rel == "usr/share" or rel.startswith("usr/share/") else \
                2 if rel == "var" or rel.startswith("var/") else 0
            paths[layer].append(rel)
    bash_doc = [p for p in paths[1] if p.startswith("usr/share/doc/bash")]
    tars = []
    for i, (fmt, names) in enumerate([(tarfile.PAX_FORMAT, paths[0]),
                                      (tarfile.GNU_FORMAT, paths[1]),
                                      (tarfile.PAX_FORMAT, paths[2])]):
        path = out / f"debian-{i}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            for rel in names:
                tar.add(os.path.join(root, rel), arcname=rel, recursive=False)
            if i == 2:
                for marker in ("etc/.wh.motd", "usr/share/doc/.wh..wh..opq"):
                    tar.addfile(tarfile.TarInfo(marker))
                for rel in ["usr/share/doc"] + bash_doc:
                    tar.add(os.path.join(root, rel), arcname=rel, recursive=False)
        tars.append(path)
    return tars


def test_debian_rootfs_matches_umoci(debian_root, registry, mounter, work):
    layout = work / "layout-debian"
    tars = _debian_tars(debian_root, work)
    desc = {"format": "oci", "layers": [{"tar": str(t), "compression": "gzip"} for t in tars]}
    mkimage.build(str(layout), "debian", desc)
    mkimage.push(str(layout), "debian", f"{registry.host}/debian/minbase:{DEBIAN_SUITE}")
    want = listing(umoci_unpack(layout, "debian", work / "umoci-debian"))
    m = mounter.mount(registry.host)
    got = listing(m / "debian/minbase" / DEBIAN_SUITE / "rootfs")
    assert_same(got, want)
    assert "etc/motd" not in got
    assert "usr/share/doc/bash/copyright" in got
    assert not any(p.startswith("usr/share/doc/apt/") for p in got)
    assert len(got) > 5000
