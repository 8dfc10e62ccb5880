"""Issue 7 (SPEC §7): hostile content gets a clear error, a log line, and
never crashes the daemon or poisons the cache.

Content a registry accepts is pushed to a real docker-registry by hand
(manifests whose descriptors lie about sizes, layers with hostile tars);
what it refuses (malformed or huge manifests) is served by a FaultFront in
front of it. Credentials: a blob redirect to another host never carries
Authorization, and a TLS registry on a non-loopback address whose token
realm is plain HTTP never gets credentials sent there.
"""

import base64
import copy
import errno
import gzip
import hashlib
import io
import json
import os
import tarfile
import urllib.error
import urllib.request

import pytest

from fault_front import FaultFront, HeaderRecorder
from harness import is_mounted, reglib, start_registry
from regfs_scripts import certs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
NON_LOOPBACK = "192.0.2.2"  # this machine's non-loopback address


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Pusher:
    """Pushes blobs and hand-made manifests to a registry without auth."""

    def __init__(self, url):
        self.url = url

    def _req(self, method, path, body=None, headers=None):
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def blob(self, repo, data):
        digest = _digest(data)
        _, headers, _ = self._req("POST", f"/v2/{repo}/blobs/uploads/")
        loc = headers["Location"]
        loc = loc[len(self.url):] if loc.startswith("http") else loc
        sep = "&" if "?" in loc else "?"
        status, _, body = self._req("PUT", f"{loc}{sep}digest={digest}", data,
                                    {"Content-Type": "application/octet-stream"})
        assert status == 201, body
        return digest

    def manifest(self, repo, tag, manifest):
        body = json.dumps(manifest).encode()
        status, _, answer = self._req("PUT", f"/v2/{repo}/manifests/{tag}", body,
                                      {"Content-Type": OCI_MANIFEST})
        assert status == 201, answer
        return _digest(body)

    def image(self, repo, tag, layers, layer_type=LAYER_TAR, diff_ids=None, edit=None):
        """Pushes an image of the given layer blobs; edit(manifest) may lie."""
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers",
                       "diff_ids": diff_ids or [_digest(layer) for layer in layers]}}).encode()
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.blob(repo, config),
                       "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": self.blob(repo, layer),
                        "size": len(layer)} for layer in layers]}
        if edit:
            edit(manifest)
        self.manifest(repo, tag, manifest)
        return manifest


def _tar(entries):
    """A tar of TarInfo-like dicts: name, type, data, linkname, size."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = e.get("type", tarfile.REGTYPE)
            info.linkname = e.get("linkname", "")
            data = e.get("data", b"")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


LAYER = b"hostile layer bytes\n" * 100
BOGUS = {
    "malformed": b'{"schemaVersion": 2, "config": [',
    "wrongshape": json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": {"digest": "nope", "size": -1},
                              "layers": {}}).encode(),
    "deep": b"[" * 100000 + b"]" * 100000,
    "huge": json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "annotations": {"pad": "x" * (5 << 20)}}).encode(),
}


@pytest.fixture(scope="module")
def hostile_registry(tmp_path_factory):
    layouts = tmp_path_factory.mktemp("hostile-layouts")
    r = start_registry(tmp_path_factory, layouts, "hostile", samples=[])
    pusher = Pusher(r.url)
    pusher.image("hostile/ok", "v1", [LAYER])
    for tag in BOGUS:  # valid here; the front serves bogus bytes for them
        pusher.image("hostile/ok", tag, [LAYER])

    def shrink(m):
        m["layers"][0]["size"] = len(LAYER) // 2

    def grow(m):
        m["layers"][0]["size"] = len(LAYER) * 2

    def huge_config(m):
        m["config"]["size"] = 9 << 20

    pusher.image("hostile/sizes", "shrunk", [LAYER], edit=shrink)
    pusher.image("hostile/sizes", "grown", [LAYER], edit=grow)
    pusher.image("hostile/sizes", "hugeconfig", [LAYER], edit=huge_config)
    pusher.image("hostile/sizes", "negative", [LAYER],
                 edit=lambda m: m["layers"][0].update(size=-1))
    # Tars a rootfs must survive.
    chain = [{"name": f"l{i}", "type": tarfile.SYMTYPE, "linkname": f"l{i + 1}"}
             for i in range(50)] + [{"name": "l50", "type": tarfile.SYMTYPE, "linkname": "l0"}]
    pusher.image("hostile/tar", "links", [_tar(chain + [
        {"name": "hard", "type": tarfile.LNKTYPE, "linkname": "no/such/target"},
        {"name": "escape", "type": tarfile.LNKTYPE, "linkname": "../../etc/passwd"},
        {"name": "ok", "data": b"fine\n"}])])
    # A header claiming a terabyte with the data missing.
    info = tarfile.TarInfo("big")
    info.size = 1 << 40
    header = info.tobuf(tarfile.GNU_FORMAT)
    absurd = header + b"x" * 512 + b"\0" * 1024
    pusher.image("hostile/tar", "absurd", [absurd])
    # A decompression bomb: 128 MiB of zeros in a few hundred KiB of gzip.
    bomb_tar = io.BytesIO()
    with tarfile.open(fileobj=bomb_tar, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 128 << 20
        tar.addfile(info, _Zeros(info.size))
    bomb = gzip.compress(bomb_tar.getvalue(), compresslevel=9, mtime=0)
    pusher.image("hostile/tar", "bomb", [bomb], layer_type=LAYER_GZIP,
                 diff_ids=[_digest(bomb_tar.getvalue())])
    yield r
    reglib.stop(r.dir)


class _Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return None


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _log(m):
    try:
        return (m.cache_dir / "regfs.log").read_text(errors="replace")
    except OSError:
        return ""


def _alive(m):
    assert is_mounted(m.path)
    assert os.listdir(m.path)


def test_malformed_and_huge_manifests_are_refused(mount, hostile_registry):
    front = FaultFront(hostile_registry.url).start()
    try:
        m = mount(front.host)
        for tag, body in BOGUS.items():
            # A hostile registry: the same bytes by tag and by their digest.
            front.add("status", path=f"/manifests/({tag}|{_digest(body)})$", status=200,
                      body=body,
                      headers={"Content-Type": OCI_MANIFEST})
        for tag in BOGUS:
            err = _errno_of(os.listdir, m / "hostile/ok" / tag)
            assert err in (errno.EINVAL, errno.EIO), (tag, err)
        assert "too large" in _log(m)
        _alive(m)
        assert _read(m / "hostile/ok/v1/blobs/sha256" / _digest(LAYER)[7:]) == LAYER
    finally:
        front.stop()


def test_descriptors_lying_about_sizes_give_eio(mount, hostile_registry):
    m = mount(hostile_registry.host)
    hex_ = _digest(LAYER)[7:]
    for tag in ("shrunk", "grown"):
        blob = m / "hostile/sizes" / tag / "blobs/sha256" / hex_
        assert _errno_of(_read, blob) == errno.EIO, tag
    assert _errno_of(_read, m / "hostile/sizes/hugeconfig/config.json") in (errno.EINVAL,
                                                                            errno.EIO)
    assert _errno_of(os.listdir, m / "hostile/sizes/negative") in (errno.EINVAL, errno.EIO)
    log = _log(m)
    assert "fewer bytes than its size" in log and "does not match digest" in log
    # Nothing wrong was kept: the honest tag of the same blob reads right.
    complete = m.cache_dir / "blobs/sha256" / hex_
    assert not complete.exists() or complete.read_bytes() == LAYER
    assert _read(m / "hostile/ok/v1/blobs/sha256" / hex_) == LAYER
    _alive(m)


def test_hostile_tars_in_rootfs(mount, hostile_registry):
    m = mount(hostile_registry.host, "--cache-size", "64M")
    root = m / "hostile/tar/links/rootfs"
    names = os.listdir(root)
    assert "ok" in names and (root / "ok").read_bytes() == b"fine\n"
    assert os.readlink(root / "l0") == "l1"  # a loop of symlinks is only text
    assert _errno_of(os.stat, root / "l0") == errno.ELOOP
    assert "passwd" not in os.listdir(m / "hostile/tar/links/rootfs")
    for name in ("hard", "escape"):  # links to nothing are left out or inert
        if name in names:
            os.lstat(root / name)
    assert _errno_of(os.listdir, m / "hostile/tar/absurd/rootfs") in (errno.EIO, errno.EINVAL)
    err = _errno_of(os.listdir, m / "hostile/tar/bomb/rootfs")
    assert err in (None, errno.ENOSPC, errno.EIO, errno.EFBIG), err
    _alive(m)
    assert _read(m / "hostile/ok/v1/blobs/sha256" / _digest(LAYER)[7:]) == LAYER


def _auth_file(path, host, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def test_blob_redirect_never_carries_authorization(mount, token_registry, tmp_path):
    front = FaultFront(token_registry.url).start()
    recorder = HeaderRecorder().start()
    try:
        auth = _auth_file(tmp_path / "auth.json", front.host, token_registry.user,
                          token_registry.password)
        m = mount(front.host, "--auth-file", auth)
        manifest = json.loads(token_registry.client.manifest("private/app", "v1")[0])
        layer = manifest["layers"][0]["digest"]
        data = token_registry.client.blob("private/app", layer)
        path = f"/v2/private/app/blobs/{layer}"
        recorder.serve(path, data)
        front.add("redirect", path=path + "$", location=recorder.url)
        assert _read(m / "private/app/v1/blobs/sha256" / layer[7:]) == data
        redirected = [h for (_, _, p, kind), h in zip(front.log, front.headers)
                      if kind == "redirect"]
        assert redirected and redirected[0].get("Authorization", "").startswith("Bearer ")
        assert recorder.requests
        for _, _, headers in recorder.requests:
            assert not any(k.lower() == "authorization" for k in headers), headers
    finally:
        recorder.stop()
        front.stop()


def test_plain_http_token_realm_gets_no_credentials(mount, token_registry, tmp_path):
    """A TLS registry on a non-loopback address whose challenge names a plain
    HTTP token realm: the credentials are never sent there."""
    ca_key, ca_cert = certs.make_ca(str(tmp_path))
    key, cert = certs.make_server_cert(str(tmp_path), ca_key, ca_cert, hosts=(NON_LOOPBACK,))
    realm = token_registry.info["token_realm"]
    issuer = realm.rsplit("/", 1)[0]
    token_front = FaultFront(issuer, bind=NON_LOOPBACK).start()
    front = FaultFront(token_registry.url, bind=NON_LOOPBACK, tls=(cert, key),
                       realm=(realm, f"{token_front.url}/token")).start()
    try:
        auth = _auth_file(tmp_path / "auth.json", front.host, token_registry.user,
                          token_registry.password)
        m = mount(front.host, "--ca-cert", ca_cert, "--auth-file", auth)
        assert "manifest.json" in os.listdir(m / "public/hello/v1")  # anonymous works
        assert _errno_of(os.listdir, m / "private/app/v1") == errno.EACCES
        assert token_front.headers, "regfs never asked the realm for a token"
        for headers in token_front.headers:
            assert not any(k.lower() == "authorization" for k in headers), headers
        for _, _, path, _ in token_front.log:
            assert "account=" not in path
        assert "over plain HTTP" in _log(m)
        _alive(m)
    finally:
        front.stop()
        token_front.stop()
