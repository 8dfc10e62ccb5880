"""Deterministic OCI image layouts from a small description, with no network.

The same description always gives the same bytes, hence the same digests:
tar entries have fixed owners and times unless told, gzip has no name and
mtime 0, JSON is written compactly in a fixed key order.

A description (a dict, or a JSON file for the CLI):
  {"format": "oci" | "docker",            media types of manifests and blobs
   "os": "linux", "architecture": "amd64", "variant": "...",   one platform
   "config": {"Env": [...], "Cmd": [...], ...},   the image config's `config`
   "layers": [LAYER, ...],
   "annotations": {...},                    manifest annotations
   "platforms": [{"os", "architecture", "variant", "config", "layers"}, ...]}
     with "platforms", the tag is an index (manifest list) of those images
LAYER: {"compression": "gzip" | "zstd" | "none", "entries": [ENTRY, ...],
        "tar_format": "pax" (default) | "gnu"  (GNU long names, no xattrs)}
   or  {"tar": "/path/to/layer.tar", "compression": ...}   an existing tar as is
   or  {"random_mib": N, "seed": S, "path": "large.bin", "compression": "none"}
ENTRY: {"path": "etc/hello", "type": "file", "content": "text"}, with type one of
   file (content | content_b64 | size+seed for random bytes), dir,
   symlink (target), hardlink (target: a path in the same layer),
   whiteout (hides path: writes .wh.<name>), opaque (path is the directory:
   writes <path>/.wh..wh..opq), char, block (major, minor), fifo;
   optional mode (int or octal string), uid, gid, uname, gname, mtime,
   xattrs {"user.k": "v"} (as SCHILY.xattr.* PAX records). Paths are
   written as given (so "../x" can be tested).
"""

import base64
import copy
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {"none": "application/vnd.oci.image.layer.v1.tar",
             "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = {"gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip"}
REF_NAME = "org.opencontainers.image.ref.name"

CREATED = "2024-01-01T00:00:00Z"
MTIME = 1704067200  # CREATED as a Unix time
CHUNK = 1 << 20


class ImageError(Exception):
    pass


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class RandomReader(io.RawIOBase):
    """size pseudo-random bytes from seed, read in order, never all in memory."""

    def __init__(self, size, seed):
        self._left = size
        self._rng = random.Random(seed)

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self._left
        n = min(n, self._left)
        self._left -= n
        return self._rng.randbytes(n)


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.blobs = os.path.join(self.path, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        with open(os.path.join(self.path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')

    def put_bytes(self, data):
        digest = hashlib.sha256(data).hexdigest()
        target = os.path.join(self.blobs, digest)
        if not os.path.exists(target):
            with open(target + ".tmp", "wb") as f:
                f.write(data)
            os.replace(target + ".tmp", target)
        return "sha256:" + digest, len(data)

    def put_file(self, tmp_path):
        """Moves a finished temp file into the blob store; returns (digest, size)."""
        h = hashlib.sha256()
        with open(tmp_path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        target = os.path.join(self.blobs, h.hexdigest())
        size = os.path.getsize(tmp_path)
        os.replace(tmp_path, target)
        return "sha256:" + h.hexdigest(), size

    def temp(self):
        fd, path = tempfile.mkstemp(dir=self.blobs, prefix=".tmp-")
        os.close(fd)
        return path

    def tag(self, tag, descriptor):
        """Adds descriptor to index.json as tag, replacing that tag if present."""
        index_path = os.path.join(self.path, "index.json")
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        if os.path.exists(index_path):
            with open(index_path) as f:
                index = json.load(f)
        index["manifests"] = [m for m in index.get("manifests", [])
                              if m.get("annotations", {}).get(REF_NAME) != tag]
        desc = dict(descriptor)
        desc["annotations"] = {REF_NAME: tag}
        index["manifests"].append(desc)
        with open(index_path + ".tmp", "wb") as f:
            f.write(_json_bytes(index))
        os.replace(index_path + ".tmp", index_path)


def _mode(value, default):
    if value is None:
        return default
    return int(value, 8) if isinstance(value, str) else int(value)


def _tar_entry(tar, entry):
    etype = entry.get("type", "file")
    path = entry["path"]
    if etype == "whiteout":
        head, name = os.path.split(path.rstrip("/"))
        path = os.path.join(head, ".wh." + name)
        etype = "file"
    elif etype == "opaque":
        path = os.path.join(path.rstrip("/"), ".wh..wh..opq")
        etype = "file"
    info = tarfile.TarInfo(path)
    info.uid = int(entry.get("uid", 0))
    info.gid = int(entry.get("gid", 0))
    info.uname = entry.get("uname", "")
    info.gname = entry.get("gname", "")
    info.mtime = int(entry.get("mtime", MTIME))
    if entry.get("xattrs"):
        info.pax_headers = {"SCHILY.xattr." + k: v for k, v in entry["xattrs"].items()}
    data = None
    if etype == "file":
        info.type = tarfile.REGTYPE
        info.mode = _mode(entry.get("mode"), 0o644)
        if "content_b64" in entry:
            content = base64.b64decode(entry["content_b64"])
        elif "size" in entry:
            info.size = int(entry["size"])
            data = RandomReader(info.size, entry.get("seed", path))
        else:
            content = entry.get("content", "").encode()
        if data is None:
            info.size = len(content)
            data = io.BytesIO(content)
    elif etype == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = _mode(entry.get("mode"), 0o755)
    elif etype == "symlink":
        info.type = tarfile.SYMTYPE
        info.mode = _mode(entry.get("mode"), 0o777)
        info.linkname = entry["target"]
    elif etype == "hardlink":
        info.type = tarfile.LNKTYPE
        info.mode = _mode(entry.get("mode"), 0o644)
        info.linkname = entry["target"]
    elif etype in ("char", "block"):
        info.type = tarfile.CHRTYPE if etype == "char" else tarfile.BLKTYPE
        info.mode = _mode(entry.get("mode"), 0o666)
        info.devmajor = int(entry.get("major", 0))
        info.devminor = int(entry.get("minor", 0))
    elif etype == "fifo":
        info.type = tarfile.FIFOTYPE
        info.mode = _mode(entry.get("mode"), 0o644)
    else:
        raise ImageError(f"unknown entry type {etype!r} for {path!r}")
    tar.addfile(info, data)


def _write_tar(path, layer):
    fmt = tarfile.GNU_FORMAT if layer.get("tar_format") == "gnu" else tarfile.PAX_FORMAT
    with open(path, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
            if "random_mib" in layer:
                _tar_entry(tar, {"path": layer.get("path", "large.bin"),
                                 "size": int(layer["random_mib"]) << 20,
                                 "seed": layer.get("seed", 1)})
            for entry in layer.get("entries", []):
                _tar_entry(tar, entry)


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _compress(src, dst, compression):
    if compression == "gzip":
        with open(src, "rb") as fin, open(dst, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                               compresslevel=6) as gz:
                shutil.copyfileobj(fin, gz, CHUNK)
    elif compression == "zstd":
        subprocess.run(["zstd", "-q", "-f", "-3", "--no-progress", src, "-o", dst],
                       check=True)
    else:
        raise ImageError(f"unknown compression {compression!r}")


def _build_layer(layout, layer, fmt):
    """Writes one layer blob; returns (descriptor, diff_id)."""
    compression = layer.get("compression", "none" if "random_mib" in layer else "gzip")
    table = DOCKER_LAYER if fmt == "docker" else OCI_LAYER
    if compression not in table:
        raise ImageError(f"{fmt} images have no layer media type for {compression!r}")
    tar_path = layout.temp()
    try:
        if "tar" in layer:
            shutil.copyfile(layer["tar"], tar_path)
        else:
            _write_tar(tar_path, layer)
        diff_id = _sha256_file(tar_path)
        if compression == "none":
            digest, size = layout.put_file(tar_path)
        else:
            out = layout.temp()
            try:
                _compress(tar_path, out, compression)
                digest, size = layout.put_file(out)
            finally:
                if os.path.exists(out):
                    os.unlink(out)
    finally:
        if os.path.exists(tar_path):
            os.unlink(tar_path)
    return {"mediaType": table[compression], "digest": digest, "size": size}, diff_id


def _platform(desc):
    p = {"architecture": desc.get("architecture", "amd64"), "os": desc.get("os", "linux")}
    if desc.get("variant"):
        p["variant"] = desc["variant"]
    return p


def build_manifest(layout, desc, fmt):
    """Writes one platform's layers, config and manifest; returns the
    manifest's descriptor (with its platform)."""
    layers, diff_ids = [], []
    for layer in desc.get("layers", []):
        d, diff_id = _build_layer(layout, layer, fmt)
        layers.append(d)
        diff_ids.append(diff_id)
    platform = _platform(desc)
    config = {"created": desc.get("created", CREATED)}
    config.update(platform)
    config["config"] = desc.get("config", {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"], "WorkingDir": "/"})
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = [{"created": desc.get("created", CREATED),
                          "created_by": f"regfs mkimage layer {i}"}
                         for i in range(len(layers))]
    config_digest, config_size = layout.put_bytes(_json_bytes(config))
    media = DOCKER_MANIFEST if fmt == "docker" else OCI_MANIFEST
    manifest = {"schemaVersion": 2, "mediaType": media,
                "config": {"mediaType": DOCKER_CONFIG if fmt == "docker" else OCI_CONFIG,
                           "digest": config_digest, "size": config_size},
                "layers": layers}
    if desc.get("annotations") and fmt == "oci":
        manifest["annotations"] = desc["annotations"]
    digest, size = layout.put_bytes(_json_bytes(manifest))
    return {"mediaType": media, "digest": digest, "size": size, "platform": platform}


def build(path, tag, desc):
    """Builds the image of desc into the layout at path under tag; returns
    the tag's descriptor (mediaType, digest, size)."""
    fmt = desc.get("format", "oci")
    if fmt not in ("oci", "docker"):
        raise ImageError(f"unknown format {fmt!r}")
    layout = Layout(path)
    if "platforms" in desc:
        manifests = []
        for p in desc["platforms"]:
            merged = {k: v for k, v in desc.items() if k not in ("platforms", "annotations")}
            merged.update(p)
            manifests.append(build_manifest(layout, merged, fmt))
        media = DOCKER_LIST if fmt == "docker" else OCI_INDEX
        index = {"schemaVersion": 2, "mediaType": media, "manifests": manifests}
        if desc.get("annotations") and fmt == "oci":
            index["annotations"] = desc["annotations"]
        digest, size = layout.put_bytes(_json_bytes(index))
        top = {"mediaType": media, "digest": digest, "size": size}
    else:
        top = build_manifest(layout, desc, fmt)
        top.pop("platform")
    layout.tag(tag, top)
    return top


def tagged(path, tag):
    """The descriptor of tag in the layout's index.json."""
    with open(os.path.join(path, "index.json")) as f:
        for m in json.load(f).get("manifests", []):
            if m.get("annotations", {}).get(REF_NAME) == tag:
                return m
    raise ImageError(f"no tag {tag!r} in {path}")


def _dir_transport(path, top, out):
    """Writes skopeo's dir: transport form of an image of the layout (hard
    links to its blobs): skopeo reads Docker media types only from there."""
    blobs = os.path.join(os.path.abspath(path), "blobs", "sha256")

    def link(digest, name):
        target = os.path.join(out, name)
        if not os.path.exists(target):
            os.link(os.path.join(blobs, digest.split(":", 1)[1]), target)

    def image(manifest_digest, manifest_name):
        link(manifest_digest, manifest_name)
        with open(os.path.join(blobs, manifest_digest.split(":", 1)[1])) as f:
            manifest = json.load(f)
        for d in [manifest["config"]] + manifest.get("layers", []):
            link(d["digest"], d["digest"].split(":", 1)[1])

    with open(os.path.join(out, "version"), "w") as f:
        f.write("Directory Transport Version: 1.1\n")
    if top["mediaType"] in (DOCKER_LIST, OCI_INDEX):
        link(top["digest"], "manifest.json")
        with open(os.path.join(blobs, top["digest"].split(":", 1)[1])) as f:
            index = json.load(f)
        for m in index["manifests"]:
            image(m["digest"], m["digest"].split(":", 1)[1] + ".manifest.json")
    else:
        image(top["digest"], "manifest.json")


def push(path, tag, dest, creds=None, tls_verify=False, cert_dir=None):
    """Pushes tag of the layout to dest ('host:port/repo:tag') with skopeo,
    keeping the layout's digests; returns the tag's descriptor."""
    top = tagged(path, tag)
    argv = ["skopeo", "copy", "--quiet", "--all", "--preserve-digests",
            f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
    if creds:
        argv += ["--dest-creds", creds]
    if cert_dir:
        argv += ["--dest-cert-dir", cert_dir]
    with tempfile.TemporaryDirectory(dir=path, prefix=".push-") as tmp:
        if top["mediaType"] in (DOCKER_MANIFEST, DOCKER_LIST):
            _dir_transport(path, top, tmp)
            source = f"dir:{tmp}"
        else:
            source = f"oci:{path}:{tag}"
        proc = subprocess.run(argv + [source, f"docker://{dest}"],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"skopeo copy to {dest} failed: {proc.stderr.strip()}")
    return top


# Sample images used by scripts/seed, the demo and the tests.

def _busybox_like(name, arch):
    return [
        {"path": "bin", "type": "dir"},
        {"path": "bin/busybox", "mode": 0o755,
         "content": f"#!/bin/sh\necho {name} busybox for {arch}\n"},
        {"path": "bin/sh", "type": "symlink", "target": "busybox"},
        {"path": "bin/ls", "type": "hardlink", "target": "bin/busybox", "mode": 0o755},
        {"path": "etc", "type": "dir"},
        {"path": "etc/os-release", "content": f"NAME={name}\nARCH={arch}\n"},
        {"path": "etc/motd", "content": "to be removed\n"},
        {"path": "tmp", "type": "dir", "mode": 0o1777},
    ]


def preset(name, arch="amd64", large_mib=8, fmt="oci"):
    """A named sample description: hello, alpine-like, multi, large, docker."""
    if name == "hello":
        return {"format": fmt, "architecture": arch, "os": "linux",
                "config": {"Cmd": ["/hello"], "Env": ["GREETING=hello"]},
                "layers": [{"compression": "gzip", "entries": [
                    {"path": "hello", "mode": 0o755, "content": "#!/bin/sh\necho hello\n"},
                    {"path": "README", "content": "regfs demo image\n"}]}]}
    if name == "alpine-like":
        return {"format": fmt, "architecture": arch, "os": "linux",
                "layers": [
                    {"compression": "gzip", "entries": _busybox_like("alpine-like", arch)},
                    {"compression": "zstd", "entries": [
                        {"path": "etc/motd", "type": "whiteout"},
                        {"path": "etc/apk", "type": "dir"},
                        {"path": "etc/apk/world", "content": "busybox\n"},
                        {"path": "usr/share/doc", "type": "dir"},
                        {"path": "usr/share/doc/x", "content": "x\n",
                         "xattrs": {"user.regfs.test": "1"}}]},
                    {"compression": "none", "entries": [
                        {"path": "usr/share/doc", "type": "opaque"},
                        {"path": "usr/share/doc/y", "content": "y\n", "uid": 1000,
                         "gid": 1000},
                        {"path": "usr/bin", "type": "dir"},
                        {"path": "usr/bin/su", "mode": 0o4755, "content": "su\n"}]}]}
    if name == "multi":
        return {"format": fmt, "platforms": [
            {"os": "linux", "architecture": "amd64",
             "layers": [{"compression": "gzip", "entries": _busybox_like("multi", "amd64")}]},
            {"os": "linux", "architecture": "arm64", "variant": "v8",
             "layers": [{"compression": "gzip", "entries": _busybox_like("multi", "arm64")}]}]}
    if name == "large":
        return {"format": fmt, "architecture": arch, "os": "linux",
                "layers": [{"compression": "gzip", "entries": [
                               {"path": "README", "content": f"{large_mib} MiB layer below\n"}]},
                           {"random_mib": large_mib, "seed": large_mib, "compression": "none"}]}
    if name == "docker":
        return preset("hello", arch=arch, fmt="docker")
    raise ImageError(f"unknown preset {name!r} (hello, alpine-like, multi, large, docker)")


def main(argv):
    import argparse
    parser = argparse.ArgumentParser(
        prog="mkimage",
        description="Build a deterministic OCI image layout (and optionally push it).")
    parser.add_argument("--out", required=True, help="OCI layout directory (created or added to)")
    parser.add_argument("--tag", required=True, help="tag in index.json (ref.name)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--desc", metavar="FILE", help="JSON description (see module doc)")
    what.add_argument("--preset", help="hello, alpine-like, multi, large, docker")
    parser.add_argument("--format", choices=["oci", "docker"],
                        help="media types: OCI or Docker schema 2 (overrides the description)")
    parser.add_argument("--arch", default="amd64", help="architecture of a preset")
    parser.add_argument("--large-mib", type=int, default=8, help="size of the large preset's layer")
    parser.add_argument("--push", metavar="HOST/REPO:TAG", help="push the tag there with skopeo")
    parser.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for --push")
    parser.add_argument("--cert-dir", help="CA directory for --push (default: TLS not verified)")
    args = parser.parse_args(argv[1:])
    try:
        if args.desc:
            with open(args.desc) as f:
                desc = json.load(f)
        else:
            desc = preset(args.preset, arch=args.arch, large_mib=args.large_mib)
        if args.format:
            desc = copy.deepcopy(desc)
            desc["format"] = args.format
        top = build(args.out, args.tag, desc)
        if args.push:
            push(args.out, args.tag, args.push, creds=args.creds,
                 tls_verify=bool(args.cert_dir), cert_dir=args.cert_dir)
    except (ImageError, OSError, ValueError, KeyError, subprocess.CalledProcessError) as e:
        print(f"mkimage: {e}", file=__import__("sys").stderr)
        return 1
    print(top["digest"])
    return 0
