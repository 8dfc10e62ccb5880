"""Issue 15 (SPEC §5): layers as real tools write them. A corpus made here by
GNU tar (sparse files with --format=posix of every sparse version, gnu and
oldgnu, --listed-incremental dumpdirs, long names, odd ids and times), bsdtar
(pax, ustar, v7) and Python's tarfile (global headers, volume labels, unknown
typeflags, odd symlink modes, links through `missing/../`, a file linked to
itself, hostile whiteouts) is pushed to a real docker-registry, and each
image's rootfs/ in a real mount is compared with `umoci raw unpack` of the
same image where umoci 0.4.7 can read it, else with GNU `tar -x` of the same
layers into a directory, one after the other. umoci cannot read GNU sparse
`S`, dumpdir `D`, global `g` or volume `V` entries, and it is no reference
for hostile whiteouts (it deletes the directory holding the rootfs for
`.wh...`): those are compared with tar -x or checked outright."""

import base64
import errno
import gzip
import hashlib
import http.server
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
import urllib.request

import pytest

from harness import Mounter, reglib, start_registry
from regfs_scripts import mkimage
from test_rootfs import assert_same, listing, umoci_unpack

SPARSE_SIZE = 3 << 20  # the sparse file's real size
RUNS = [(i * (256 << 10), bytes([65 + i]) * 1000) for i in range(12)] + \
    [(SPARSE_SIZE - 10, b"z" * 10)]  # 13 data runs: old GNU needs extension headers
LONG_DIR = "long/" + "/".join(["d" * 60] * 5)  # 300+ bytes
BIG_UID = 3000000  # over 7 octal digits: base-256 in gnu, a PAX record in posix
FAR_FUTURE = 1 << 33  # over 11 octal digits (and within what ext4 keeps)
BEFORE_EPOCH = -1000000


def sparse_bytes():
    data = bytearray(SPARSE_SIZE)
    for offset, run in RUNS:
        data[offset:offset + len(run)] = run
    return bytes(data)


def _write_sparse(path):
    with open(path, "wb") as f:
        f.truncate(SPARSE_SIZE)
        for offset, run in RUNS:
            f.seek(offset)
            f.write(run)


def make_source(root):
    """A tree with a sparse file, long names and links, odd owners and times."""
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("NAME=corpus\n")
    _write_sparse(root / "sparse.img")
    deep = root / LONG_DIR
    deep.mkdir(parents=True)
    (deep / ("f" * 120)).write_text("a long name\n")
    os.link(deep / ("f" * 120), root / "etc/hard-to-long")
    os.symlink("/" + LONG_DIR + "/" + "f" * 120, root / "etc/long-symlink")
    odd = root / "odd"
    odd.mkdir()
    (odd / "big-uid").write_text("owned by a big uid\n")
    os.chown(odd / "big-uid", BIG_UID, BIG_UID + 1)
    (odd / "mid-uid").write_text("uid 70000\n")
    os.chown(odd / "mid-uid", 70000, 70001)
    (odd / "future").write_text("far future\n")
    os.utime(odd / "future", (FAR_FUTURE, FAR_FUTURE))
    (odd / "past").write_text("before the epoch\n")
    os.utime(odd / "past", (BEFORE_EPOCH, BEFORE_EPOCH))
    (odd / "setuid").write_text("s\n")
    os.chmod(odd / "setuid", 0o4755)
    os.utime(odd, (1600000000, 1600000000))
    return root


def gnu_tar(src, out, *args):
    subprocess.run(["tar", "-C", str(src), "-cf", str(out), "--sort=name", "--numeric-owner",
                    *args, "."], check=True, capture_output=True)
    return out


def bsdtar(src, out, fmt):
    subprocess.run(["bsdtar", "-C", str(src), "-cf", str(out), "--format", fmt, "--numeric-owner",
                    "."], check=True, capture_output=True)
    return out


def typeflags(path):
    """The typeflags of an archive's entries, as Python's tarfile reads them."""
    with tarfile.open(path) as tar:
        return {m.type for m in tar.getmembers()}


def tar_x(tars, out):
    """GNU tar -x of each layer in order into out (as root: owners and modes kept)."""
    out.mkdir()
    for t in tars:
        subprocess.run(["tar", "-x", "-f", str(t), "-C", str(out), "--numeric-owner",
                        "--same-owner", "--same-permissions"], check=True, capture_output=True)
    return out


def _info(name, type_=tarfile.REGTYPE, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.size = len(data)
    ti.mtime = kw.pop("mtime", 1700000000)
    ti.mode = kw.pop("mode", 0o755 if type_ in (tarfile.DIRTYPE, b"D") else 0o644)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, data


def python_tar(path, entries, fmt=tarfile.PAX_FORMAT, pax_headers=None):
    with tarfile.open(path, "w", format=fmt, pax_headers=pax_headers or {}) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if ti.type in (tarfile.REGTYPE, b"Z") else None)
    return path


def odd_types_tar(path):
    """A PAX global header, a GNU volume label and dumpdir, an unknown type."""
    entries = [
        _info("label", b"V"),
        _info("./", tarfile.DIRTYPE, mode=0o755),
        _info("inc", b"D", data=b"Yone\0Ntwo\0\0", mode=0o750, uid=1234, gid=4321),
        _info("inc/one", data=b"one\n"),
        _info("vendor", b"Z", data=b"vendor data\n", mode=0o640),
    ]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "made by the regfs tests"}) as tar:
        for ti, data in entries:
            tar.addfile(ti)  # the header; tarfile writes no data for types it does not know
            padded = data + b"\0" * (-len(data) % 512)
            tar.fileobj.write(padded)
            tar.offset += len(padded)
    return path


def make_simple(root):
    """What ustar and v7 can hold: short names, small ids, a link of each kind."""
    root.mkdir()
    (root / "dir").mkdir()
    (root / "dir/file").write_text("simple\n")
    os.chmod(root / "dir/file", 0o600)
    os.link(root / "dir/file", root / "hard")
    os.symlink("dir/file", root / "sym")
    os.chown(root / "dir", 1000, 1000)
    return root


@pytest.fixture(scope="module")
def registry(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "layers", samples=[])
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("layers-work")


@pytest.fixture(scope="module")
def source(work):
    return make_source(work / "src")


def push(registry, work, name, tars, compression="gzip"):
    layout = work / f"layout-{name}"
    desc = {"format": "oci",
            "layers": [{"tar": str(t), "compression": compression} for t in tars]}
    mkimage.build(str(layout), name, desc)
    mkimage.push(str(layout), name, f"{registry.host}/layers/{name}:1")
    return layout


@pytest.fixture(scope="module")
def corpus(registry, work, source):
    """{name: (layout, [layer tars])} of every image pushed."""
    out = {}

    def add(name, tars, compression="gzip"):
        out[name] = (push(registry, work, name, tars, compression), tars)

    for version in ("0.0", "0.1", "1.0"):
        add(f"posix-sparse-{version.replace('.', '')}",
            [gnu_tar(source, work / f"posix-{version}.tar", "--format=posix", "--sparse",
                     f"--sparse-version={version}")])
    add("gnu-sparse", [gnu_tar(source, work / "gnu.tar", "--format=gnu", "--sparse")])
    add("oldgnu-sparse", [gnu_tar(source, work / "oldgnu.tar", "--format=oldgnu", "--sparse")],
        "zstd")
    # Two incremental levels: the second holds `D` entries listing each directory.
    snar = work / "snar"
    level0 = gnu_tar(source, work / "inc0.tar", "--format=gnu", f"--listed-incremental={snar}")
    inc = work / "src-inc"
    subprocess.run(["cp", "-a", str(source), str(inc)], check=True)
    (inc / "etc/os-release").write_text("NAME=level1\n")
    (inc / "etc/new").write_text("new in level 1\n")
    subprocess.run(["cp", str(snar), str(work / "snar1")], check=True)
    level1 = gnu_tar(inc, work / "inc1.tar", "--format=gnu",
                     f"--listed-incremental={work / 'snar1'}")
    add("incremental", [level0, level1])
    add("bsdtar-pax", [bsdtar(source, work / "bsd-pax.tar", "pax")])
    simple = make_simple(work / "simple")
    add("bsdtar-ustar-v7", [bsdtar(simple, work / "bsd-ustar.tar", "ustar"),
                            bsdtar(simple / "dir", work / "bsd-v7.tar", "v7")], "none")
    add("odd-types", [odd_types_tar(work / "odd-types.tar")])
    return out


@pytest.fixture(scope="module")
def mnt(tmp_path_factory, registry, corpus):
    m = Mounter(tmp_path_factory.mktemp("layers-mounts"))
    yield m.mount(registry.host)
    m.close()


def rootfs(mnt, name):
    return mnt / "layers" / name / "1" / "rootfs"


@pytest.mark.parametrize("name", ["posix-sparse-00", "posix-sparse-01", "posix-sparse-10",
                                  "bsdtar-pax", "bsdtar-ustar-v7"])
def test_layers_umoci_reads_match_umoci(mnt, corpus, work, name):
    layout, _ = corpus[name]
    want = listing(umoci_unpack(layout, name, work / f"umoci-{name}"))
    got = listing(rootfs(mnt, name))
    assert_same(got, want)


@pytest.mark.parametrize("name", ["gnu-sparse", "oldgnu-sparse", "incremental", "odd-types",
                                  "posix-sparse-10"])
def test_layers_umoci_cannot_read_match_tar_x(mnt, corpus, work, name):
    _, tars = corpus[name]
    want = listing(tar_x(tars, work / f"tar-x-{name}"))
    got = listing(rootfs(mnt, name))
    assert_same(got, want)


@pytest.mark.parametrize("name", ["posix-sparse-00", "posix-sparse-01", "posix-sparse-10",
                                  "gnu-sparse", "oldgnu-sparse"])
def test_sparse_files_show_their_real_size_and_read_at_random(mnt, corpus, registry, name):
    _, tars = corpus[name]
    raw = tars[0].read_bytes()
    marker = b"GNUSparseFile" if name.startswith("posix-sparse-1") else \
        b"GNU.sparse" if name.startswith("posix") else None
    if marker:
        assert marker in raw  # the archive really holds a sparse entry
    else:
        assert tarfile.GNUTYPE_SPARSE in typeflags(tars[0])
    assert tars[0].stat().st_size < SPARSE_SIZE
    path = rootfs(mnt, name) / "sparse.img"
    assert path.stat().st_size == SPARSE_SIZE
    want = sparse_bytes()
    offset = registry.log_offset()
    with open(path, "rb") as f:
        for at, length in [(0, 100), (900, 5000), (3 * (256 << 10) - 7, 20),
                           (SPARSE_SIZE - 4096, 8192), (1 << 20, 300 << 10)]:
            f.seek(at)
            assert f.read(length) == want[at:at + length], (at, length)
    assert registry.blob_gets_since(offset) == []
    assert path.read_bytes() == want


def test_long_names_odd_ids_and_times(mnt, corpus):
    for name in ("posix-sparse-10", "gnu-sparse", "bsdtar-pax"):
        root = rootfs(mnt, name)
        st = os.lstat(root / "odd/big-uid")
        assert (st.st_uid, st.st_gid) == (BIG_UID, BIG_UID + 1), name
        assert os.lstat(root / "odd/future").st_mtime == FAR_FUTURE, name
        assert os.lstat(root / "odd/past").st_mtime == BEFORE_EPOCH, name
        assert (root / LONG_DIR / ("f" * 120)).read_text() == "a long name\n"
        assert os.stat(root / "etc/hard-to-long").st_ino == \
            os.stat(root / LONG_DIR / ("f" * 120)).st_ino


def test_dumpdirs_are_directories_and_volume_labels_are_ignored(mnt, corpus):
    root = rootfs(mnt, "odd-types")
    st = os.lstat(root / "inc")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert (root / "inc/one").read_text() == "one\n"
    assert "label" not in os.listdir(root)
    assert (root / "vendor").read_bytes() == b"vendor data\n"  # unknown type: a regular file
    assert {b"V", b"D", b"Z"} <= typeflags(corpus["odd-types"][1][0])
    assert b"D" in typeflags(corpus["incremental"][1][1])
    incremental = rootfs(mnt, "incremental")
    assert (incremental / "etc/os-release").read_text() == "NAME=level1\n"
    assert stat.S_ISDIR(os.lstat(incremental / "etc").st_mode)


def test_merge_rules_as_umoci_and_containerd(registry, work, tmp_path_factory):
    """Symlinks 0777, links through `missing/../`, a file linked to itself,
    whiteouts naming nothing: checked outright (umoci fails or deletes its
    rootfs on some of these)."""
    base = python_tar(work / "merge-0.tar", [
        _info("etc", tarfile.DIRTYPE), _info("etc/passwd", data=b"root:x:0:0\n"),
        _info("bin", tarfile.DIRTYPE), _info("bin/tool", data=b"tool\n", mode=0o755),
        _info("bin/tool", tarfile.LNKTYPE, linkname="bin/tool"),
        _info("a", tarfile.SYMTYPE, linkname="missing/../etc", mode=0o644),
        _info("zero", tarfile.SYMTYPE, linkname="etc/passwd", mode=0),
    ])
    top = python_tar(work / "merge-1.tar", [
        _info("b", tarfile.LNKTYPE, linkname="a/passwd"),
        _info("a/new", data=b"through a\n"),
        _info("etc/.wh..", data=b""), _info(".wh..", data=b""), _info("bin/.wh.", data=b""),
    ])
    push(registry, work, "merge", [base, top])
    m = Mounter(tmp_path_factory.mktemp("merge-mounts"))
    try:
        mp = m.mount(registry.host)
        root = rootfs(mp, "merge")
        assert sorted(os.listdir(root)) == ["a", "b", "bin", "etc", "zero"]  # no `missing`
        assert sorted(os.listdir(root / "etc")) == ["new", "passwd"]
        assert (root / "etc/new").read_text() == "through a\n"
        assert os.stat(root / "b").st_ino == os.stat(root / "etc/passwd").st_ino
        assert os.stat(root / "b").st_nlink == 2
        assert (root / "bin/tool").read_text() == "tool\n"
        assert os.lstat(root / "bin/tool").st_nlink == 1
        for link in ("a", "zero"):
            assert stat.S_IMODE(os.lstat(root / link).st_mode) == 0o777
        assert os.readlink(root / "a") == "missing/../etc"
        log = (mp.cache_dir / "regfs.log").read_text()
        assert "bin/tool" in log and "links to itself" in log
        assert "a whiteout must name an entry of its directory" in log
    finally:
        m.close()


def test_a_layer_that_cannot_be_read_fails_the_view_with_eio(registry, work, tmp_path_factory):
    good = python_tar(work / "eio-0.tar", [_info("f", data=b"kept\n")])
    bad = bytearray(python_tar(work / "eio-1.tar", [_info("g", data=b"x" * 2000)]).read_bytes())
    bad[148:156] = b"0000000\0"  # a header checksum that does not match
    (work / "eio-1.tar").write_bytes(bytes(bad))
    push(registry, work, "eio", [good, work / "eio-1.tar"])
    m = Mounter(tmp_path_factory.mktemp("eio-mounts"))
    try:
        mp = m.mount(registry.host)
        with pytest.raises(OSError) as e:
            os.listdir(rootfs(mp, "eio"))
        assert e.value.errno == errno.EIO  # never the first layer alone
        assert (mp / "layers/eio/1/manifest.json").is_file()
    finally:
        m.close()


# Manifests: indexes nested in indexes.

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def put_index(registry, repo, ref, manifests):
    """PUTs an OCI index of `manifests` as repo:ref; returns its descriptor."""
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": manifests}).encode()
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{ref}", data=body,
                                 method="PUT", headers={"Content-Type": OCI_INDEX})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 201
    return {"mediaType": OCI_INDEX, "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body)}


def test_nested_indexes_are_followed_to_the_platform(registry, work, tmp_path_factory):
    layout = work / "layout-nested"
    mkimage.build(str(layout), "multi", mkimage.preset("multi"))
    inner = mkimage.push(str(layout), "multi", f"{registry.host}/layers/nested:inner")
    inner = {k: inner[k] for k in ("mediaType", "digest", "size")}
    # An index whose only entry is the multi-platform index, without a platform.
    put_index(registry, "layers/nested", "1", [inner])
    # One that names the inner index under a platform, twice (followed once).
    put_index(registry, "layers/nested", "2",
              [dict(inner, platform={"os": "linux", "architecture": "arm64"}), inner])
    # Nested deeper than regfs follows.
    deep = inner
    for level in range(6):
        deep = put_index(registry, "layers/nested", f"deep{level}", [deep])
    m = Mounter(tmp_path_factory.mktemp("nested-mounts"))
    try:
        arm = m.mount(registry.host, "--platform", "linux/arm64")
        amd = m.mount(registry.host, "--platform", "linux/amd64")
        for tag in ("1", "2"):
            assert "ARCH=arm64" in (arm / f"layers/nested/{tag}/rootfs/etc/os-release").read_text()
            config = json.loads((arm / f"layers/nested/{tag}/config.json").read_text())
            assert config["architecture"] == "arm64"
        assert "ARCH=amd64" in (amd / "layers/nested/1/rootfs/etc/os-release").read_text()
        # Every manifest of the nesting is a blob of the image directory.
        blobs = os.listdir(arm / "layers/nested/1/blobs/sha256")
        assert inner["digest"].split(":")[1] in blobs
        with pytest.raises(OSError) as e:
            os.listdir(arm / "layers/nested/deep5")
        assert e.value.errno == errno.EINVAL
        assert "nested more than" in (arm.cache_dir / "regfs.log").read_text()
        assert "ARCH=arm64" in (arm / "layers/nested/deep2/rootfs/etc/os-release").read_text()
    finally:
        m.close()


# Foreign layers: a Docker foreign layer or an OCI non-distributable one that
# the registry lacks, fetched from its urls on a small HTTP server here.

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


class ForeignServer:
    """http.server on 127.0.0.1 serving blobs by path (whole: Range ignored,
    as many static servers do), `/moved/<path>` redirecting there, and every
    request's path and headers recorded."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                if self.path.startswith("/moved/"):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/moved"):])
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _gzip_layer(entries):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if data else None)
    tar_bytes = raw.getvalue()
    return tar_bytes, gzip.compress(tar_bytes, mtime=0)


def _sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class AuthPusher:
    """Pushes blobs and manifests by hand, with the registry's basic credentials."""

    def __init__(self, registry):
        self.url = registry.url
        token = base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}

    def _req(self, method, path, body=None, headers=None):
        url = path if path.startswith("http") else self.url + path
        req = urllib.request.Request(url, data=body, method=method,
                                     headers={**self.auth, **(headers or {})})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers)

    def blob(self, repo, data):
        _, headers = self._req("POST", f"/v2/{repo}/blobs/uploads/")
        loc = headers["Location"]
        sep = "&" if "?" in loc else "?"
        status, _ = self._req("PUT", f"{loc}{sep}digest={_sha(data)}", data,
                              {"Content-Type": "application/octet-stream"})
        assert status == 201

    def manifest(self, repo, tag, manifest):
        body = json.dumps(manifest).encode()
        status, _ = self._req("PUT", f"/v2/{repo}/manifests/{tag}", body,
                              {"Content-Type": manifest["mediaType"]})
        assert status == 201


def push_foreign(pusher, repo, tag, fmt, base, foreign, urls, foreign_type):
    """An image of a base layer the registry holds and a foreign one it does not."""
    (base_tar, base_gz), (foreign_tar, foreign_gz) = base, foreign
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": [_sha(base_tar), _sha(foreign_tar)]}}).encode()
    pusher.blob(repo, config)
    pusher.blob(repo, base_gz)
    docker = fmt == "docker"
    pusher.manifest(repo, tag, {
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                   "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER if docker else mkimage.OCI_LAYER["gzip"],
                    "digest": _sha(base_gz), "size": len(base_gz)},
                   {"mediaType": foreign_type, "digest": _sha(foreign_gz),
                    "size": len(foreign_gz), "urls": urls}]})


def test_foreign_layers_are_fetched_from_their_urls(basic_registry, tmp_path_factory):
    base = _gzip_layer([_info("etc", tarfile.DIRTYPE), _info("etc/base", data=b"base\n")])
    foreign = _gzip_layer([_info("Windows", tarfile.DIRTYPE),
                           _info("Windows/foreign.txt", data=b"from the urls\n" * 1000)])
    wrong = _gzip_layer([_info("Windows/foreign.txt", data=b"not the layer\n" * 1000)])
    server = ForeignServer({"/layer.tar.gz": foreign[1], "/wrong.tar.gz": wrong[1]})
    pusher = AuthPusher(basic_registry)
    repo = "layers/foreign"
    push_foreign(pusher, repo, "docker", "docker", base, foreign,
                 [f"{server.url}/missing.tar.gz", f"{server.url}/moved/layer.tar.gz"],
                 DOCKER_FOREIGN)
    push_foreign(pusher, repo, "oci", "oci", base, foreign, [f"{server.url}/layer.tar.gz"],
                 OCI_NONDIST)
    # A layer whose urls serve other bytes (of the same size would not matter).
    other = _gzip_layer([_info("Windows/other.txt", data=b"other layer\n")])
    push_foreign(pusher, repo, "wrong", "oci", base, other, [f"{server.url}/wrong.tar.gz"],
                 OCI_NONDIST)
    m = Mounter(tmp_path_factory.mktemp("foreign-mounts"))
    try:
        mp = m.mount(basic_registry.host, "--auth-file", basic_registry.auth_file)
        for tag in ("docker", "oci"):
            rootfs = mp / repo / tag / "rootfs"
            assert (rootfs / "Windows/foreign.txt").read_bytes() == b"from the urls\n" * 1000
            assert (rootfs / "etc/base").read_text() == "base\n"
        paths = [p for p, _ in server.requests]
        assert "/missing.tar.gz" in paths and "/moved/layer.tar.gz" in paths
        assert "/layer.tar.gz" in paths
        assert all("Authorization" not in h and "authorization" not in h
                   for _, h in server.requests)
        # The bytes at the urls are not the layer: EIO, nothing kept.
        with pytest.raises(OSError) as e:
            os.listdir(mp / repo / "wrong" / "rootfs")
        assert e.value.errno == errno.EIO
        assert "/wrong.tar.gz" in [p for p, _ in server.requests]
        blobs = mp.cache_dir / "blobs" / "sha256"
        assert (blobs / _sha(foreign[1]).split(":")[1]).exists()  # verified, kept
        assert not (blobs / _sha(other[1]).split(":")[1]).exists()

        refused = m.mount(basic_registry.host, "--auth-file", basic_registry.auth_file,
                          "--no-urls")
        before = len(server.requests)
        with pytest.raises(OSError) as e:
            os.listdir(refused / repo / "docker" / "rootfs")
        assert e.value.errno == errno.EIO
        assert len(server.requests) == before
        assert "--no-urls" in (refused.cache_dir / "regfs.log").read_text()
    finally:
        m.close()
        server.close()
