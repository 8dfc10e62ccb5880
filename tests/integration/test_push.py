"""SPEC §4: pushing by copying a directory into a new tag, through a real
mount and real docker-registry processes; every pushed image is read back
with skopeo (inspect, copy) and compared by digest."""

import base64
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from harness import REGFS, ROOT, has_tool

MKIMAGE = ROOT / "scripts" / "mkimage"
REF_NAME = "org.opencontainers.image.ref.name"
UPLOAD_METHODS = ("PATCH",)


def skopeo(*args, check=True):
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def remote_digest(registry, ref, creds=None):
    args = ["inspect", "--raw", "--tls-verify=false"]
    if creds:
        args += ["--creds", creds]
    raw = skopeo(*args, f"docker://{registry.host}/{ref}").stdout
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def read_back(registry, ref, tmp_path, creds=None):
    """skopeo copy of the pushed tag to an OCI layout; its digest."""
    dest = tmp_path / ("readback-" + ref.replace("/", "_").replace(":", "_"))
    args = ["copy", "--all", "--preserve-digests", "--src-tls-verify=false"]
    if creds:
        args += ["--src-creds", creds]
    skopeo(*args, f"docker://{registry.host}/{ref}", f"oci:{dest}:x")
    index = json.loads((dest / "index.json").read_bytes())
    return index["manifests"][0]["digest"]


def cp_r(src, dst):
    return subprocess.run(["cp", "-r", str(src), str(dst)], capture_output=True, text=True,
                          timeout=600)


def uploads(registry, offset):
    """Blob uploads (POST without mount, PATCH, PUT of blobs) since offset."""
    out = []
    for method, path in registry.requests_since(offset):
        if "/blobs/uploads/" not in path:
            continue
        if method == "POST" and "mount=" in path:
            continue
        if method in ("POST", "PATCH", "PUT"):
            out.append((method, path))
    return out


def mkimage(out, tag, preset, *extra):
    subprocess.run([sys.executable, str(MKIMAGE), "--out", str(out), "--tag", tag,
                    "--preset", preset, *extra], check=True, capture_output=True, timeout=600)


def layout_digest(layout, tag=None):
    index = json.loads((Path(layout) / "index.json").read_bytes())
    for m in index["manifests"]:
        if tag is None or m.get("annotations", {}).get(REF_NAME) == tag:
            return m["digest"]
    raise AssertionError(f"no {tag} in {layout}")


@pytest.fixture
def plain(mount, plain_registry):
    return mount(plain_registry.host)


def test_retag_uploads_only_the_manifest(plain, plain_registry, tmp_path):
    offset = plain_registry.log_offset()
    result = cp_r(plain / "demo/hello/v1", plain / "demo/hello/retag")
    assert result.returncode == 0, result.stderr
    assert "retag" in os.listdir(plain / "demo/hello")
    want = plain_registry.digest("demo/hello:v1")
    assert remote_digest(plain_registry, "demo/hello:retag") == want
    assert uploads(plain_registry, offset) == []
    puts = [p for m, p in plain_registry.requests_since(offset) if m == "PUT"]
    assert puts == ["/v2/demo/hello/manifests/retag"]
    assert read_back(plain_registry, "demo/hello:retag", tmp_path) == want
    # The pushed tag keeps what cp wrote, with the modes cp gave it.
    assert (plain / "demo/hello/retag/oci-layout").read_bytes() == \
        (plain / "demo/hello/v1/oci-layout").read_bytes()


def test_cross_repository_mounts_blobs(plain, plain_registry, tmp_path):
    os.mkdir(plain / "copies")
    offset = plain_registry.log_offset()
    result = cp_r(plain / "demo/hello/v2", plain / "copies/v2")
    assert result.returncode == 0, result.stderr
    want = plain_registry.digest("demo/hello:v2")
    assert remote_digest(plain_registry, "copies:v2") == want
    assert uploads(plain_registry, offset) == []
    mounts = [p for m, p in plain_registry.requests_since(offset) if "mount=" in p]
    assert mounts and all("from=demo%2Fhello" in p for p in mounts)
    assert read_back(plain_registry, "copies:v2", tmp_path) == want
    # mkdir -p ns/repo: repo becomes a namespace once a tag is made in it.
    os.makedirs(plain / "nested/app")
    result = cp_r(plain / "demo/hello/v1", plain / "nested/app/v1")
    assert result.returncode == 0, result.stderr
    assert remote_digest(plain_registry, "nested/app:v1") == plain_registry.digest("demo/hello:v1")
    assert "v1" in os.listdir(plain / "nested/app")


def test_multi_platform_retag(plain, plain_registry, tmp_path):
    result = cp_r(plain / "demo/multi/1", plain / "demo/multi/again")
    assert result.returncode == 0, result.stderr
    assert remote_digest(plain_registry, "demo/multi:again") == plain_registry.digest("demo/multi:1")


def test_cross_registry_with_credentials(mount, plain_registry, basic_registry, tmp_path):
    m = mount(None, "--auth-file", basic_registry.auth_file)
    src = m / plain_registry.host / "demo/hello/v2"
    os.mkdir(m / basic_registry.host / "copied")
    offset = plain_registry.log_offset()
    result = cp_r(src, m / basic_registry.host / "copied/v2")
    assert result.returncode == 0, result.stderr
    creds = f"{basic_registry.user}:{basic_registry.password}"
    want = plain_registry.digest("demo/hello:v2")
    assert remote_digest(basic_registry, "copied:v2", creds) == want
    assert read_back(basic_registry, "copied:v2", tmp_path, creds) == want
    # The layers were streamed from the source registry, not read by cp.
    assert plain_registry.blob_gets_since(offset)


def test_local_oci_layout_from_skopeo(plain, plain_registry, tmp_path):
    built = tmp_path / "built"
    mkimage(built, "v1", "large", "--large-mib", "20")
    layout = tmp_path / "layout"
    skopeo("copy", f"oci:{built}:v1", f"oci:{layout}:v1")
    want = layout_digest(layout, "v1")
    os.mkdir(plain / "local")
    offset = plain_registry.log_offset()
    result = cp_r(layout, plain / "local/big")
    assert result.returncode == 0, result.stderr
    assert remote_digest(plain_registry, "local:big") == want
    # The 20 MiB layer went in chunks.
    assert any(m == "PATCH" for m, _ in uploads(plain_registry, offset))
    assert read_back(plain_registry, "local:big", tmp_path) == want


@pytest.mark.skipif(not has_tool("umoci"), reason="umoci missing")
def test_local_oci_layout_from_umoci(plain, plain_registry, tmp_path):
    layout = tmp_path / "umoci"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:v1"], check=True)
    rootfs = tmp_path / "bundle-rootfs"
    rootfs.mkdir()
    (rootfs / "hello.txt").write_text("hello from umoci\n")
    subprocess.run(["umoci", "insert", "--image", f"{layout}:v1", str(rootfs / "hello.txt"),
                    "/hello.txt"], check=True)
    want = layout_digest(layout, "v1")
    os.makedirs(plain / "umoci/app")
    result = cp_r(layout, plain / "umoci/app/v1")
    assert result.returncode == 0, result.stderr
    assert remote_digest(plain_registry, "umoci/app:v1") == want
    assert read_back(plain_registry, "umoci/app:v1", tmp_path) == want


def _tar_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_docker_save(directory, repo_tag):
    """A legacy `docker save` directory: manifest.json array, <id>.json
    config, <layer id>/layer.tar, repositories."""
    directory.mkdir()
    layers = [_tar_bytes({"etc/hostname": b"saved\n"}),
              _tar_bytes({"app/run.sh": b"#!/bin/sh\necho saved\n"})]
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/app/run.sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_id = hashlib.sha256(config).hexdigest()
    (directory / f"{config_id}.json").write_bytes(config)
    paths = []
    for t in layers:
        layer_id = hashlib.sha256(t + b"id").hexdigest()
        (directory / layer_id).mkdir()
        (directory / layer_id / "layer.tar").write_bytes(t)
        (directory / layer_id / "VERSION").write_text("1.0")
        paths.append(f"{layer_id}/layer.tar")
    (directory / "manifest.json").write_text(json.dumps(
        [{"Config": f"{config_id}.json", "RepoTags": [repo_tag], "Layers": paths}]))
    (directory / "repositories").write_text(json.dumps({repo_tag.split(":")[0]: {}}))
    return "sha256:" + config_id, diff_ids


def test_docker_save_directory(plain, plain_registry, tmp_path):
    saved = tmp_path / "saved"
    config_digest, diff_ids = make_docker_save(saved, "app:v1")
    os.mkdir(plain / "saved")
    result = cp_r(saved, plain / "saved/v1")
    assert result.returncode == 0, result.stderr
    raw = skopeo("inspect", "--raw", "--tls-verify=false",
                 f"docker://{plain_registry.host}/saved:v1").stdout
    manifest = json.loads(raw)
    assert manifest["config"]["digest"] == config_digest
    assert [l["digest"] for l in manifest["layers"]] == diff_ids
    assert all(l["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
               for l in manifest["layers"])
    want = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    assert read_back(plain_registry, "saved:v1", tmp_path) == want
    # Pushed at close(), and said so (it said "pending build" when its first
    # files had looked like a build's).
    assert os.getxattr(plain / "saved/v1", "user.regfs.state").decode() == "pushed " + want


def test_corrupt_blob_fails_close_and_is_not_pushed(plain, plain_registry, tmp_path):
    layout = tmp_path / "layout"
    mkimage(layout, "v1", "hello")
    index = json.loads((layout / "index.json").read_bytes())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:])
                          .read_bytes())
    layer = manifest["layers"][0]["digest"]
    path = layout / "blobs/sha256" / layer[7:]
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"corrupt")
    os.mkdir(plain / "corrupt")
    offset = plain_registry.log_offset()
    tag = plain / "corrupt/v1"
    os.mkdir(tag)
    os.makedirs(tag / "blobs/sha256")
    f = open(tag / "blobs/sha256" / layer[7:], "wb")
    f.write(path.read_bytes())
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.EIO
    assert not (tag / "blobs/sha256" / layer[7:]).exists()
    result = cp_r(layout / "index.json", tag / "index.json")
    assert result.returncode == 0, result.stderr  # incomplete: nothing pushed
    assert all(layer not in p for _, p in plain_registry.requests_since(offset))
    assert skopeo("inspect", "--tls-verify=false", f"docker://{plain_registry.host}/corrupt:v1",
                  check=False).returncode != 0


def test_invalid_names(plain):
    with pytest.raises(OSError) as e:
        os.mkdir(plain / "Upper")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.mkdir(plain / "demo/hello/bad tag")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        (plain / "demo/hello/v1/new-file").write_text("x")
    assert e.value.errno == errno.EROFS


def _auth_file(path, host, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def test_denied_push_is_kept_and_retried(mount, token_registry, tmp_path):
    bob = _auth_file(tmp_path / "bob.json", token_registry.host, "bob", "bob-secret")
    cache = tmp_path / "shared-cache"
    m = mount(token_registry.host, "--auth-file", bob, "--cache-dir", cache)
    result = cp_r(m / "public/hello/v1", m / "public/hello/bobs")
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    error = os.getxattr(m / "public/hello/bobs", "user.regfs.error").decode()
    assert error
    assert "bobs" not in token_registry.client.tags("public/hello")
    m.unmount()
    m2 = mount(token_registry.host, "--auth-file", token_registry.auth_file, "--cache-dir", cache)
    assert sorted(os.listdir(m2 / "public/hello/bobs")) == \
        ["blobs", "config.json", "index.json", "manifest.json", "oci-layout"]
    os.utime(m2 / "public/hello/bobs/index.json")  # touch: no retry without a write/close
    with open(m2 / "public/hello/bobs/index.json", "ab"):
        pass  # touch opens for writing: the close retries the push
    creds = f"{token_registry.user}:{token_registry.password}"
    assert remote_digest(token_registry, "public/hello:bobs", creds) == \
        token_registry.digest("public/hello:v1")
    with pytest.raises(OSError):
        os.getxattr(m2 / "public/hello/bobs", "user.regfs.error")


def test_staged_content_survives_remount(mount, plain_registry, tmp_path):
    layout = tmp_path / "layout"
    mkimage(layout, "v1", "alpine-like")
    cache = tmp_path / "shared-cache"
    m = mount(plain_registry.host, "--cache-dir", cache)
    os.mkdir(m / "survivor")
    tag = m / "survivor/v1"
    os.mkdir(tag)
    result = cp_r(layout / "blobs", tag / "blobs")  # blobs only: incomplete
    assert result.returncode == 0, result.stderr
    os.chmod(tag / "blobs", 0o750)
    before = {p.name: (p.stat().st_size, p.stat().st_mode)
              for p in (tag / "blobs/sha256").iterdir()}
    m.unmount()
    m2 = mount(plain_registry.host, "--cache-dir", cache)
    tag = m2 / "survivor/v1"
    after = {p.name: (p.stat().st_size, p.stat().st_mode)
             for p in (tag / "blobs/sha256").iterdir()}
    assert after == before
    assert (tag / "blobs").stat().st_mode & 0o777 == 0o750
    result = cp_r(layout / "index.json", tag / "index.json")
    assert result.returncode == 0, result.stderr
    assert remote_digest(plain_registry, "survivor:v1") == layout_digest(layout, "v1")
    # The pushed tag is the registry's: rm -r without --allow-delete fails
    # with EROFS and changes nothing (it returned 0 and changed nothing).
    before = sorted(str(p.relative_to(tag)) for p in tag.rglob("*"))
    result = subprocess.run(["rm", "-r", str(tag)], capture_output=True, text=True)
    assert result.returncode != 0 and "Read-only file system" in result.stderr, result.stderr
    assert sorted(str(p.relative_to(tag)) for p in tag.rglob("*")) == before
    with pytest.raises(OSError) as e:
        os.rmdir(tag)
    assert e.value.errno == errno.EROFS
    assert "is pushed" in (cache / "regfs.log").read_text()
    assert remote_digest(plain_registry, "survivor:v1") == layout_digest(layout, "v1")
    # rm -r of a staged tag not pushed discards it.
    os.mkdir(m2 / "survivor/gone")
    subprocess.run(["rm", "-r", str(m2 / "survivor/gone")], check=True)
    assert "gone" not in os.listdir(m2 / "survivor")


def _staged_tags(m):
    status = subprocess.run([str(REGFS), "status", str(m.path)], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    return status.stdout.split("staged tags:", 1)[1].split("recent errors:", 1)[0].strip()


def _docker_save_dir(path, linked=False):
    """What `docker save` unpacks to: a layer directory <hex>/ with VERSION,
    json and layer.tar, beside manifest.json and repositories; `linked`:
    layer.tar a symlink to ../<hex>.tar, as skopeo's docker-archive writes."""
    layer = path / ("ab" * 32)
    layer.mkdir(parents=True)
    (layer / "VERSION").write_text("1.0")
    (layer / "json").write_text("{}")
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        t.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    if linked:
        (path / ("cd" * 32 + ".tar")).write_bytes(tar.getvalue())
        os.symlink("../" + "cd" * 32 + ".tar", layer / "layer.tar")
    else:
        (layer / "layer.tar").write_bytes(tar.getvalue())
    (path / "manifest.json").write_text("[]")
    (path / "repositories").write_text("{}")
    return path


def test_an_image_copied_to_the_root_is_refused_and_not_pushed(mount, plain_registry, tmp_path):
    """cp -r LAYOUT MOUNT/ makes LAYOUT a namespace: its files are refused
    (EINVAL, and the log says where an image goes), its blobs/ becomes no
    tag (it was pushed as LAYOUT:blobs), and nothing is pushed or left
    staged but the namespace cp made, empty; the same for a docker save
    directory; a tag named blobs copied into a repository still pushes."""
    m = mount(plain_registry.host, "--push-delay", "1")
    layout = tmp_path / "misplaced"
    mkimage(layout, "v1", "hello")
    for _ in range(2):  # the second time into the namespace the first made
        result = cp_r(layout, m.path)
        assert result.returncode != 0
        assert "Read-only file system" not in result.stderr, result.stderr
        for name in ("oci-layout", "index.json"):
            assert f"cannot create regular file '{m.path}/misplaced/{name}': Invalid argument" \
                in result.stderr, result.stderr
        assert f"cannot create directory '{m.path}/misplaced/blobs/sha256': Invalid argument" \
            in result.stderr, result.stderr
        assert os.listdir(m / "misplaced") == []
    saved = _docker_save_dir(tmp_path / "misplaced-save")
    result = cp_r(saved, m.path)
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result.stderr
    assert os.listdir(m / "misplaced-save") == []
    # skopeo's docker-archive: layer.tar a symlink (a build was pushed of
    # the files after the first one refused).
    saved = _docker_save_dir(tmp_path / "misplaced-linked", linked=True)
    result = cp_r(saved, m.path)
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result.stderr
    assert os.listdir(m / "misplaced-linked") == []
    # The same with the link made first: cp -r of the layer directory
    # holding the link alone, then of the rest.
    hexdir = saved / ("ab" * 32)
    first = tmp_path / "link-first/misplaced-linked"
    (first / ("ab" * 32)).mkdir(parents=True)
    os.symlink(os.readlink(hexdir / "layer.tar"), first / ("ab" * 32) / "layer.tar")
    result = cp_r(first, m.path)
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result.stderr
    result = cp_r(saved, m.path)
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result.stderr
    assert os.listdir(m / "misplaced-linked") == []
    with pytest.raises(OSError) as e:
        (m / "stray-file").write_text("x")
    assert e.value.errno == errno.EINVAL
    time.sleep(3)  # past --push-delay: a build would be pushed by now
    assert _staged_tags(m) == "none"
    catalog = plain_registry.client.catalog()
    assert not [r for r in catalog if r.split("/")[0].startswith("misplaced")], catalog
    log = (m.cache_dir / "regfs.log").read_text()
    assert "Cannot create oci-layout in misplaced: a namespace holds only namespaces and " \
        "repositories; an image is copied to NAMESPACE/REPO/TAG" in log, log
    assert "misplaced/blobs is an image layout's blobs/ directory, not a tag" in log, log
    assert "is a docker save layer directory, not a tag" in log, log
    # SPEC §4 unchanged: into a repository, under a new tag (even "blobs").
    os.mkdir(m / "misplaced/app")
    for tag in ("v1", "blobs"):
        result = cp_r(layout, m / "misplaced/app" / tag)
        assert result.returncode == 0, result.stderr
        assert remote_digest(plain_registry, f"misplaced/app:{tag}") == layout_digest(layout, "v1")


def test_delete_needs_allow_delete(mount, plain_registry, tmp_path):
    m = mount(plain_registry.host)
    result = cp_r(m / "demo/hello/v1", m / "demo/hello/shared")
    assert result.returncode == 0, result.stderr
    with pytest.raises(OSError) as e:
        os.rmdir(m / "demo/hello/latest")
    assert e.value.errno == errno.EROFS
    m.unmount()
    m2 = mount(plain_registry.host, "--allow-delete")
    # v1, latest and shared share one manifest: the registry deletes manifests.
    with pytest.raises(OSError) as e:
        os.rmdir(m2 / "demo/hello/shared")
    assert e.value.errno == errno.EBUSY
    layout = tmp_path / "layout"
    mkimage(layout, "v1", "large", "--large-mib", "1")
    os.mkdir(m2 / "deleteme")
    assert cp_r(layout, m2 / "deleteme/v1").returncode == 0
    assert "v1" in plain_registry.client.tags("deleteme")
    subprocess.run(["rm", "-r", str(m2 / "deleteme/v1")], check=True)
    assert "v1" not in (plain_registry.client.tags("deleteme") or [])
    assert "v1" not in os.listdir(m2 / "deleteme")
