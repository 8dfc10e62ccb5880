"""SPEC §1 --mirror and registries.conf: reads go through a pull-through
cache (a second docker-registry with `proxy: remoteurl:` pointing at the test
registry) first, and to the registry itself when the mirror fails."""

import json
import os
import socket

import pytest

from harness import Registry, reglib

REPO, TAG = "demo/hello", "v1"


@pytest.fixture(scope="module")
def pull_through(tmp_path_factory, plain_registry):
    directory = tmp_path_factory.mktemp("mirror")
    info = reglib.start(str(directory), proxy=plain_registry.url)
    yield Registry(info, {})
    reglib.stop(str(directory))


def _dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_image(m, registry):
    body = registry.anonymous.manifest(REPO, TAG)[0]
    image = m / REPO / TAG
    assert (image / "manifest.json").read_bytes() == body
    manifest = json.loads(body)
    for d in [manifest["config"]] + manifest["layers"]:
        assert (image / "blobs/sha256" / d["digest"][7:]).read_bytes() == \
            registry.anonymous.blob(REPO, d["digest"])
    return manifest


def _fetched(registry, offset):
    return [(method, path) for method, path in registry.requests_since(offset)
            if f"/v2/{REPO}/" in path and ("/manifests/" in path or "/blobs/" in path)]


def test_reads_go_through_the_mirror(mount, plain_registry, pull_through):
    mirror_start = pull_through.log_offset()
    m = mount(plain_registry.host, "--mirror", f"{plain_registry.host}={pull_through.host}")
    manifest = _read_image(m, plain_registry)
    seen = _fetched(pull_through, mirror_start)
    paths = [path for _, path in seen]
    assert any(f"/manifests/{TAG}" in p for p in paths), seen  # the tag's HEAD
    for d in [manifest["config"]] + manifest["layers"]:
        assert any(p.endswith(f"/blobs/{d['digest']}") for p in paths), (d, seen)


def test_a_dead_mirror_falls_back_to_the_registry(mount, plain_registry):
    start = plain_registry.log_offset()
    m = mount(plain_registry.host, "--mirror", f"{plain_registry.host}=127.0.0.1:{_dead_port()}")
    _read_image(m, plain_registry)
    assert _fetched(plain_registry, start)


def test_a_mirror_without_the_image_falls_back(mount, tmp_path, plain_registry):
    """A mirror that answers 404 (an ordinary registry, not a proxy)."""
    empty = reglib.start(str(tmp_path / "empty"))
    try:
        m = mount(plain_registry.host, "--mirror", f"{plain_registry.host}={empty['host']}")
        _read_image(m, plain_registry)
    finally:
        reglib.stop(str(tmp_path / "empty"))


def test_registries_conf_mirror(mount, tmp_path, plain_registry, pull_through):
    home = tmp_path / "home"
    conf = home / ".config/containers/registries.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"""
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "{plain_registry.host}"
location = "{plain_registry.host}"

[[registry.mirror]]
location = "{pull_through.host}"
insecure = true
""")
    start = pull_through.log_offset()
    m = mount(plain_registry.host, home=home)
    _read_image(m, plain_registry)
    assert _fetched(pull_through, start)


def test_registries_conf_mirror_of_a_namespace(mount, tmp_path, plain_registry, pull_through):
    """A [[registry]] prefix with a namespace: only its repositories use the mirror."""
    home = tmp_path / "home"
    conf = home / ".config/containers/registries.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"""
[[registry]]
prefix = "{plain_registry.host}/other"
location = "{plain_registry.host}/other"
mirror = [{{ location = "{pull_through.host}/other" }}]
""")
    start = pull_through.log_offset()
    m = mount(plain_registry.host, home=home)
    _read_image(m, plain_registry)
    assert not _fetched(pull_through, start)


def test_unparsable_registries_conf_is_ignored(run_regfs, tmp_path, plain_registry):
    home = tmp_path / "run-home"  # run_regfs's HOME
    conf = home / ".config/containers/registries.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[[registry]\nlocation = \n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = run_regfs("mount", "--cache-dir", tmp_path / "cache", plain_registry.host, mp)
    assert proc.returncode == 0, proc.stderr
    assert "registries.conf: line 1:" in proc.stderr, proc.stderr
    assert (mp / REPO / TAG / "manifest.json").read_bytes() == \
        plain_registry.anonymous.manifest(REPO, TAG)[0]
