"""The test tooling itself, without regfs: the registries answer in their
modes, mkimage is deterministic and correct, pushes keep digests, the tag
front paginates. If these fail, the regfs tests' verdicts mean nothing."""

import gzip
import hashlib
import json
import ssl
import subprocess
import tarfile
import urllib.error
import urllib.request

import pytest

from harness import MANY_TAGS, PAGED_REPOS, seedlib
from regclient import RegistryClient, parse_challenge
from regfs_scripts import mkimage
from tag_pager import TagPager


def _status(url, ctx=None, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def test_plain_registry_answers_without_auth(plain_registry):
    status, _ = _status(plain_registry.url + "/v2/")
    assert status == 200
    assert "demo/hello" in plain_registry.anonymous.catalog()


def test_basic_registry_needs_credentials(basic_registry):
    status, headers = _status(basic_registry.url + "/v2/demo/hello/tags/list")
    assert status == 401
    assert parse_challenge(headers["WWW-Authenticate"])[0] == "basic"
    assert "v1" in basic_registry.client.tags("demo/hello")
    auth = json.load(open(basic_registry.auth_file))["auths"]
    assert basic_registry.host in auth


def test_token_registry_rules(token_registry):
    status, headers = _status(token_registry.url + "/v2/")
    assert status == 401
    scheme, params = parse_challenge(headers["WWW-Authenticate"])
    assert scheme == "bearer" and params["realm"].startswith("http://127.0.0.1:")
    anon = token_registry.anonymous
    assert anon.manifest("public/hello", "v1")[2] == token_registry.digest("public/hello:v1")
    status, _, _ = anon.request("/v2/private/app/manifests/v1")
    assert status in (401, 403)
    assert token_registry.client.manifest("private/app", "v1")[2] == \
        token_registry.digest("private/app:v1")
    bad = RegistryClient(token_registry.url, "alice", "wrong")
    assert bad.request("/v2/private/app/manifests/v1")[0] == 401
    bob = RegistryClient(token_registry.url, "bob", "bob-secret")
    assert bob.request("/v2/private/app/manifests/v1")[0] in (401, 403)
    assert bob.manifest("public/hello", "v1")[2] == token_registry.digest("public/hello:v1")


def test_tls_registry_verifies_with_test_ca(tls_registry):
    ctx = ssl.create_default_context(cafile=tls_registry.ca_cert)
    for host in ("127.0.0.1", "localhost"):
        port = tls_registry.host.split(":")[1]
        assert _status(f"https://{host}:{port}/v2/", ctx)[0] == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(tls_registry.url + "/v2/", timeout=30,
                               context=ssl.create_default_context())


def test_catalog_is_paginated_by_maxentries(paged_registry):
    status, headers = _status(paged_registry.url + "/v2/_catalog")
    assert status == 200 and 'rel="next"' in headers["Link"]
    repos = paged_registry.anonymous.catalog()
    assert sorted(repos) == sorted({r for r, _, _ in seedlib.SAMPLES} | set(PAGED_REPOS))


def test_pushed_digests_equal_layout_digests(plain_registry, layouts):
    for repo, tag, preset in seedlib.SAMPLES:
        layout_digest = mkimage.tagged(str(layouts / preset), preset)["digest"]
        body, media_type, digest = plain_registry.anonymous.manifest(repo, tag)
        assert digest == layout_digest == "sha256:" + hashlib.sha256(body).hexdigest()
        assert media_type == json.loads(body)["mediaType"]


def _layer_tar(path, media_type):
    with open(path, "rb") as f:
        data = f.read()
    if media_type.endswith("gzip"):
        return gzip.decompress(data)
    if media_type.endswith("zstd"):
        return subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True,
                              check=True).stdout
    return data


def test_mkimage_layers_match_diff_ids(layouts):
    for preset in ("hello", "alpine-like", "multi", "docker"):
        layout = layouts / preset
        blobs = layout / "blobs" / "sha256"
        top = mkimage.tagged(str(layout), preset)
        top_json = json.loads((blobs / top["digest"][7:]).read_bytes())
        manifests = [m["digest"] for m in top_json["manifests"]] \
            if "manifests" in top_json else [top["digest"]]
        for digest in manifests:
            manifest = json.loads((blobs / digest[7:]).read_bytes())
            config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
            tars = [_layer_tar(blobs / d["digest"][7:], d["mediaType"])
                    for d in manifest["layers"]]
            assert config["rootfs"]["diff_ids"] == \
                ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]
            for d in [manifest["config"]] + manifest["layers"]:
                blob = (blobs / d["digest"][7:]).read_bytes()
                assert len(blob) == d["size"]
                assert "sha256:" + hashlib.sha256(blob).hexdigest() == d["digest"]


def test_mkimage_is_deterministic_and_writes_all_entry_types(tmp_path):
    desc = mkimage.preset("alpine-like")
    a = mkimage.build(str(tmp_path / "a"), "x", desc)
    b = mkimage.build(str(tmp_path / "b"), "x", desc)
    assert a == b
    blobs = tmp_path / "a" / "blobs" / "sha256"
    manifest = json.loads((blobs / a["digest"][7:]).read_bytes())
    names = {}
    for d in manifest["layers"]:
        import io
        with tarfile.open(fileobj=io.BytesIO(_layer_tar(blobs / d["digest"][7:],
                                                         d["mediaType"]))) as tar:
            for member in tar.getmembers():
                names[member.name] = member
    assert names["bin/sh"].issym() and names["bin/sh"].linkname == "busybox"
    assert names["bin/ls"].islnk() and names["bin/ls"].linkname == "bin/busybox"
    assert "etc/.wh.motd" in names
    assert "usr/share/doc/.wh..wh..opq" in names
    assert names["usr/bin/su"].mode == 0o4755
    assert names["usr/share/doc/x"].pax_headers["SCHILY.xattr.user.regfs.test"] == "1"


def test_mkimage_large_layer(tmp_path):
    top = mkimage.build(str(tmp_path / "l"), "big", mkimage.preset("large", large_mib=3))
    blobs = tmp_path / "l" / "blobs" / "sha256"
    manifest = json.loads((blobs / top["digest"][7:]).read_bytes())
    assert manifest["layers"][-1]["size"] > 3 << 20
    assert manifest["layers"][-1]["mediaType"] == mkimage.OCI_LAYER["none"]


def test_tag_front_paginates_and_passes_through(plain_registry):
    front = TagPager(plain_registry.url, page_size=2).start()
    try:
        client = RegistryClient(front.url)
        status, headers, body = client.request("/v2/demo/many/tags/list")
        assert status == 200
        assert json.loads(body)["tags"] == MANY_TAGS[:2]
        assert 'rel="next"' in headers["Link"]
        tags, path = [], "/v2/demo/many/tags/list?n=3"
        while path:
            headers, body = client.get(path)
            tags += json.loads(body)["tags"]
            link = headers.get("Link")
            path = link[1:link.index(">")] if link else None
        assert tags == MANY_TAGS
        via_front = client.manifest("demo/hello", "v1")
        direct = plain_registry.anonymous.manifest("demo/hello", "v1")
        assert via_front == direct
        layer = json.loads(direct[0])["layers"][0]
        assert client.blob("demo/hello", layer["digest"]) == \
            plain_registry.anonymous.blob("demo/hello", layer["digest"])
        status, _, _ = client.request("/v2/no/such/manifests/v1", method="HEAD")
        assert status == 404
    finally:
        front.stop()


def test_tag_front_passes_auth_challenges(token_registry):
    front = TagPager(token_registry.url, page_size=1).start()
    try:
        status, headers = _status(front.url + "/v2/")
        assert status == 401
        assert parse_challenge(headers["WWW-Authenticate"])[0] == "bearer"
        client = RegistryClient(front.url, token_registry.user, token_registry.password)
        headers, body = client.get("/v2/private/app/tags/list")
        assert json.loads(body)["tags"] == ["v1"] and "Link" not in headers
    finally:
        front.stop()
