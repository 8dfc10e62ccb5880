"""SPEC §3: an image directory is an OCI layout that skopeo reads in place."""

import json
import subprocess

import pytest

REF_NAME = "org.opencontainers.image.ref.name"


def _skopeo(*args):
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _tagged(layout, tag):
    index = json.loads((layout / "index.json").read_bytes())
    return [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == tag][0]


@pytest.mark.parametrize("name", ["demo/hello:v1", "library/alpine-like:3"])
def test_skopeo_copy_from_image_dir(plain_mount, plain_registry, tmp_path, name):
    repo, tag = name.rsplit(":", 1)
    dest = tmp_path / "copy"
    _skopeo("copy", "--preserve-digests", f"oci:{plain_mount / repo / tag}", f"oci:{dest}:{tag}")
    assert _tagged(dest, tag)["digest"] == plain_registry.digest(name)
    for digest, size, _, body in plain_registry.anonymous.reachable(repo, tag):
        got = (dest / "blobs/sha256" / digest[7:]).read_bytes()
        assert len(got) == size
        if body is None:
            body = plain_registry.anonymous.blob(repo, digest)
        assert got == body


def test_skopeo_copy_all_platforms(plain_mount, plain_registry, tmp_path):
    dest = tmp_path / "multi"
    _skopeo("copy", "--all", "--preserve-digests", f"oci:{plain_mount / 'demo/multi/1'}",
            f"oci:{dest}:1")
    assert _tagged(dest, "1")["digest"] == plain_registry.digest("demo/multi:1")
    reachable = plain_registry.anonymous.reachable("demo/multi", "1")
    for digest, _, _, _ in reachable:
        assert (dest / "blobs/sha256" / digest[7:]).exists()


def test_skopeo_copy_to_dir_transport(plain_mount, plain_registry, tmp_path):
    dest = tmp_path / "dir"
    _skopeo("copy", f"oci:{plain_mount / 'demo/hello/v1'}", f"dir:{dest}")
    body, _, _ = plain_registry.anonymous.manifest("demo/hello", "v1")
    assert (dest / "manifest.json").read_bytes() == body


def test_skopeo_inspect(plain_mount, plain_registry):
    path = plain_mount / "demo/hello/v1"
    info = json.loads(_skopeo("inspect", f"oci:{path}"))
    assert info["Digest"] == plain_registry.digest("demo/hello:v1")
    raw = _skopeo("inspect", "--raw", f"oci:{path}:v1")
    assert raw.encode() == plain_registry.anonymous.manifest("demo/hello", "v1")[0]
    config = json.loads(_skopeo("inspect", "--config", f"oci:{path}"))
    assert config["architecture"] == "amd64"
