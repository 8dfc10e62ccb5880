"""SPEC §2: the tree of namespaces, repositories, tags and digest directories,
in single-registry and multi-registry mode."""

import hashlib
import os
import subprocess

from harness import eventually, reglib, seedlib, start_registry

IMAGE_ENTRIES = {"oci-layout", "index.json", "manifest.json", "config.json", "blobs"}


def _repos():
    return sorted({repo for repo, _, _ in seedlib.SAMPLES})


def test_single_registry_root_lists_top_namespaces(plain_mount):
    names = set(os.listdir(plain_mount.path))
    assert {repo.split("/")[0] for repo in _repos()} <= names
    assert all("/" not in n for n in names)


def test_nested_namespaces_are_directories(plain_mount):
    assert {"hello", "multi", "docker", "many"} <= set(os.listdir(plain_mount / "demo"))
    assert os.listdir(plain_mount / "team") == ["project"]
    assert os.listdir(plain_mount / "team/project") == ["app"]
    for repo in _repos():
        parts = repo.split("/")
        for i in range(1, len(parts) + 1):
            assert (plain_mount / "/".join(parts[:i])).is_dir(), repo


def test_repository_lists_its_tags(plain_mount, plain_registry):
    for repo in _repos():
        assert sorted(os.listdir(plain_mount / repo)) == \
            sorted(plain_registry.anonymous.tags(repo)), repo
        for tag in os.listdir(plain_mount / repo):
            assert (plain_mount / repo / tag).is_dir()


def test_digest_directory_is_reachable_but_not_listed(plain_mount, plain_registry):
    digest = plain_registry.digest("demo/hello:v1")
    repo_dir = plain_mount / "demo/hello"
    assert digest not in os.listdir(repo_dir)
    assert (repo_dir / digest).is_dir()
    assert set(os.listdir(repo_dir / digest)) == IMAGE_ENTRIES
    manifest = (repo_dir / digest / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest
    assert manifest == (repo_dir / "v1" / "manifest.json").read_bytes()


def test_digest_directory_of_a_multi_platform_tag(plain_mount, plain_registry):
    digest = plain_registry.digest("demo/multi:1")
    manifest = (plain_mount / "demo/multi" / digest / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest


def test_image_directory_lists_layout_entries_without_rootfs(plain_mount):
    for name in ("demo/hello/v1", "demo/multi/1", "team/project/app/v1"):
        entries = set(os.listdir(plain_mount / name))
        assert entries == IMAGE_ENTRIES, name
        assert "rootfs" not in entries
        assert os.listdir(plain_mount / name / "blobs") == ["sha256"]


def test_find_lists_no_rootfs(plain_mount):
    out = subprocess.run(["find", str(plain_mount / "demo/hello/v1")], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert "/rootfs" not in out
    assert str(plain_mount / "demo/hello/v1/manifest.json") in out.splitlines()


def test_multi_registry_mode(mount, plain_registry):
    m = mount(None)
    assert "docker.io" in os.listdir(m.path)
    registry_dir = m / plain_registry.host
    assert registry_dir.is_dir()
    assert {"demo", "team"} <= set(os.listdir(registry_dir))
    assert "v1" in os.listdir(registry_dir / "demo/hello")
    assert os.listdir(registry_dir / "team/project/app") == ["v1"]
    body = plain_registry.anonymous.manifest("demo/hello", "v1")[0]
    assert (registry_dir / "demo/hello/v1/manifest.json").read_bytes() == body


def test_listings_follow_the_registry(tmp_path_factory, layouts, mount):
    """The kernel keeps listings (no OPENDIR); a listing that changes in the
    registry or in the daemon is still seen within --tag-ttl."""
    r = start_registry(tmp_path_factory, layouts, "listings",
                       samples=[("demo/hello", "v1", "hello")])
    try:
        m = mount(r.host, "--tag-ttl", "1")
        repo = m / "demo/hello"
        assert os.listdir(repo) == ["v1"]
        assert os.listdir(repo) == ["v1"], "a listing read again from the kernel's cache"
        assert os.listdir(m / "demo") == ["hello"]
        seedlib.seed(r.host, str(layouts), samples=[("demo/hello", "v2", "hello"),
                                                    ("demo/other", "v1", "hello")])
        assert eventually(lambda: sorted(os.listdir(repo)) == ["v1", "v2"], within=10), \
            os.listdir(repo)
        assert eventually(lambda: sorted(os.listdir(m / "demo")) == ["hello", "other"],
                          within=10), os.listdir(m / "demo")
        # A tag made through the mount shows at once, and find walks it.
        (repo / "v3").mkdir()
        assert sorted(os.listdir(repo)) == ["v1", "v2", "v3"]
        out = subprocess.run(["find", str(repo)], check=True, capture_output=True, text=True,
                             timeout=60).stdout.splitlines()
        assert str(repo / "v2" / "manifest.json") in out and str(repo / "v3") in out
    finally:
        reglib.stop(r.dir)


def test_registry_in_use_is_listed_at_once(mount, plain_registry):
    m = mount(None)
    assert plain_registry.host not in os.listdir(m.path)
    assert "demo" in os.listdir(m / plain_registry.host)
    assert plain_registry.host in os.listdir(m.path), "the root's kept listing is reread"
