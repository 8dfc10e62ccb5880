"""SPEC §3: every file of an image directory, byte for byte against what the
registry serves; listing and stat download no layers; xattrs."""

import hashlib
import json
import os
import subprocess

import pytest

from harness import host_platform
from regclient import INDEX_TYPES

REF_NAME = "org.opencontainers.image.ref.name"
IMAGES = ["demo/hello:v1", "demo/hello:v2", "library/alpine-like:3", "demo/docker:v1",
          "team/project/app:v1", "demo/multi:1"]


def _split(name):
    repo, tag = name.rsplit(":", 1)
    return repo, tag


def _platform_manifest(registry, repo, index_body):
    os_, arch, variant = host_platform()
    for m in json.loads(index_body)["manifests"]:
        p = m.get("platform", {})
        if p.get("os") == os_ and p.get("architecture") == arch and \
                (variant is None or p.get("variant") == variant):
            return json.loads(registry.anonymous.manifest(repo, m["digest"])[0])
    pytest.skip(f"no image for {os_}/{arch} in the sample index")


@pytest.mark.parametrize("name", IMAGES)
def test_layout_files(plain_mount, plain_registry, name):
    repo, tag = _split(name)
    d = plain_mount / repo / tag
    body, media_type, digest = plain_registry.anonymous.manifest(repo, tag)
    assert digest == plain_registry.digest(name)
    assert json.loads((d / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((d / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    assert len(index["manifests"]) == 1
    desc = index["manifests"][0]
    assert desc["digest"] == digest
    assert desc["size"] == len(body)
    assert desc["mediaType"] == media_type
    assert desc["annotations"][REF_NAME] == tag


@pytest.mark.parametrize("name", IMAGES)
def test_manifest_json_is_the_served_manifest(plain_mount, plain_registry, name):
    repo, tag = _split(name)
    body, _, digest = plain_registry.anonymous.manifest(repo, tag)
    got = (plain_mount / repo / tag / "manifest.json").read_bytes()
    assert got == body
    assert "sha256:" + hashlib.sha256(got).hexdigest() == digest
    assert os.stat(plain_mount / repo / tag / "manifest.json").st_size == len(body)


@pytest.mark.parametrize("name", IMAGES)
def test_config_json(plain_mount, plain_registry, name):
    repo, tag = _split(name)
    body, media_type, _ = plain_registry.anonymous.manifest(repo, tag)
    manifest = json.loads(body)
    if media_type in INDEX_TYPES:
        manifest = _platform_manifest(plain_registry, repo, body)
    expected = plain_registry.anonymous.blob(repo, manifest["config"]["digest"])
    assert (plain_mount / repo / tag / "config.json").read_bytes() == expected
    if media_type in INDEX_TYPES:
        assert json.loads(expected)["architecture"] == host_platform()[1]


@pytest.mark.parametrize("name", IMAGES)
def test_blobs_are_every_reachable_blob_byte_for_byte(plain_mount, plain_registry, name):
    repo, tag = _split(name)
    blobs_dir = plain_mount / repo / tag / "blobs" / "sha256"
    reachable = plain_registry.anonymous.reachable(repo, tag)
    assert sorted(os.listdir(blobs_dir)) == sorted({d[7:] for d, _, _, _ in reachable})
    for digest, size, _, body in reachable:
        path = blobs_dir / digest[7:]
        assert os.stat(path).st_size == size, digest
        if body is None:
            body = plain_registry.anonymous.blob(repo, digest)
        got = path.read_bytes()
        assert len(got) == size
        assert got == body, digest
        assert "sha256:" + hashlib.sha256(got).hexdigest() == digest


def test_multi_platform_blobs_include_index_and_every_platform(plain_mount, plain_registry):
    body, media_type, digest = plain_registry.anonymous.manifest("demo/multi", "1")
    assert media_type in INDEX_TYPES
    names = set(os.listdir(plain_mount / "demo/multi/1/blobs/sha256"))
    assert digest[7:] in names
    platforms = json.loads(body)["manifests"]
    assert len(platforms) == 2
    for m in platforms:
        assert m["digest"][7:] in names
        manifest = json.loads(plain_registry.anonymous.manifest("demo/multi", m["digest"])[0])
        assert manifest["config"]["digest"][7:] in names
        for layer in manifest["layers"]:
            assert layer["digest"][7:] in names


def test_listing_and_stat_download_no_layers(mount, plain_registry):
    m = mount(plain_registry.host)
    offset = plain_registry.log_offset()
    layers = set()
    for name in ("demo/hello:v2", "demo/multi:1", "library/alpine-like:3"):
        repo, tag = _split(name)
        d = m / repo / tag
        subprocess.run(["ls", "-lR", str(d)], check=True, capture_output=True, timeout=60)
        subprocess.run(["find", str(d), "-ls"], check=True, capture_output=True, timeout=60)
        subprocess.run(["du", "-s", "--apparent-size", str(d)], check=True,
                       capture_output=True, timeout=60)
        for digest, size, media_type, _ in plain_registry.anonymous.reachable(repo, tag):
            assert os.stat(d / "blobs/sha256" / digest[7:]).st_size == size
            if ".layer." in media_type or ".rootfs." in media_type:
                layers.add(digest)
    assert layers
    fetched = set(plain_registry.blob_gets_since(offset))
    assert not fetched & layers, "a layer was downloaded by ls/stat/find"
    cached = 0
    for root, _, files in os.walk(m.cache_dir):
        for f in files:
            if any(digest[7:] in f for digest in layers):
                cached += os.path.getsize(os.path.join(root, f))
    assert cached == 0, "layer bytes are in the cache after ls/stat/find"


def _xattr(path, name):
    return os.getxattr(path, name).decode()


@pytest.mark.parametrize("name", ["demo/hello:v1", "demo/multi:1", "demo/docker:v1"])
def test_xattrs_on_image_dir_and_manifest(plain_mount, plain_registry, name):
    repo, tag = _split(name)
    _, media_type, digest = plain_registry.anonymous.manifest(repo, tag)
    d = plain_mount / repo / tag
    for path in (d, d / "manifest.json", plain_mount / repo / digest):
        assert _xattr(path, "user.regfs.digest") == digest
        assert _xattr(path, "user.regfs.mediaType") == media_type
    assert {"user.regfs.digest", "user.regfs.mediaType"} <= set(os.listxattr(d))


def test_getfattr_prints_the_digest(plain_mount, plain_registry):
    d = plain_mount / "demo/hello/v1"
    out = subprocess.run(["getfattr", "--only-values", "-n", "user.regfs.digest", str(d)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    assert out == plain_registry.digest("demo/hello:v1")


def test_same_bytes_through_two_tags(plain_mount):
    a = (plain_mount / "demo/hello/v1/manifest.json").read_bytes()
    b = (plain_mount / "demo/hello/latest/manifest.json").read_bytes()
    assert a == b
