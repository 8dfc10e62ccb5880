"""SPEC §6: Basic and bearer-token registries; credentials from --auth-file
and ~/.docker/config.json. Without them (SPEC §7): EACCES where the
registry's catalog proves the repository exists, ENOENT with a `regfs login`
hint in the log where nothing proves it (the registry answers 401 alike for
private and missing repositories)."""

import base64
import json
import os
import shutil

import pytest


def _auth_file(path, host, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def _docker_home(tmp_path, auth_file):
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    shutil.copy(auth_file, home / ".docker" / "config.json")
    return home


def _assert_readable(m, registry, repo, tag):
    assert tag in os.listdir(m / repo)
    body = registry.client.manifest(repo, tag)[0]
    assert (m / repo / tag / "manifest.json").read_bytes() == body
    layer = json.loads(body)["layers"][0]["digest"]
    assert (m / repo / tag / "blobs/sha256" / layer[7:]).read_bytes() == \
        registry.client.blob(repo, layer)


def _assert_eacces(m, repo, tag):
    with pytest.raises(PermissionError):
        os.listdir(m / repo)
    with pytest.raises(PermissionError):
        (m / repo / tag / "manifest.json").read_bytes()


def _assert_hidden(m, repo, tag):
    """Not proven: ENOENT (never EACCES), explained once in the log."""
    with pytest.raises(FileNotFoundError):
        os.listdir(m / repo)
    with pytest.raises(FileNotFoundError):
        (m / repo / tag / "manifest.json").read_bytes()
    log = (m.cache_dir / "regfs.log").read_text()
    assert "No repository" in log
    assert "regfs login" in log


def test_basic_with_auth_file(mount, basic_registry):
    m = mount(basic_registry.host, "--auth-file", basic_registry.auth_file)
    _assert_readable(m, basic_registry, "demo/hello", "v1")
    _assert_readable(m, basic_registry, "team/project/app", "v1")
    assert "demo" in os.listdir(m.path)


def test_basic_with_docker_config(mount, basic_registry, tmp_path):
    m = mount(basic_registry.host, home=_docker_home(tmp_path, basic_registry.auth_file))
    _assert_readable(m, basic_registry, "demo/hello", "v1")


def test_basic_without_credentials_hides_repositories(mount, basic_registry):
    m = mount(basic_registry.host)
    _assert_hidden(m, "demo/hello", "v1")
    assert "anonymous" in (m.cache_dir / "regfs.log").read_text()


def test_basic_with_wrong_password_hides_repositories(mount, basic_registry, tmp_path):
    bad = _auth_file(tmp_path / "bad.json", basic_registry.host, "alice", "wrong")
    m = mount(basic_registry.host, "--auth-file", bad)
    _assert_hidden(m, "demo/hello", "v1")
    assert "user alice" in (m.cache_dir / "regfs.log").read_text()


def test_token_anonymous_reads_public_only(mount, token_registry):
    m = mount(token_registry.host)
    _assert_readable(m, token_registry, "public/hello", "v1")
    _assert_eacces(m, "private/app", "v1")
    # The mount stays up and keeps serving what it may.
    assert (m / "public/hello/v1/config.json").read_bytes()


def test_token_with_auth_file_reads_private(mount, token_registry):
    m = mount(token_registry.host, "--auth-file", token_registry.auth_file)
    _assert_readable(m, token_registry, "private/app", "v1")
    _assert_readable(m, token_registry, "public/hello", "v1")


def test_token_with_docker_config_reads_private(mount, token_registry, tmp_path):
    m = mount(token_registry.host, home=_docker_home(tmp_path, token_registry.auth_file))
    _assert_readable(m, token_registry, "private/app", "v1")


def test_token_user_without_access_is_eacces(mount, token_registry, tmp_path):
    bob = _auth_file(tmp_path / "bob.json", token_registry.host, "bob", "bob-secret")
    m = mount(token_registry.host, "--auth-file", bob)
    _assert_eacces(m, "private/app", "v1")
    _assert_readable(m, token_registry, "public/hello", "v1")


def test_token_multi_registry_mode_with_auth_file(mount, token_registry):
    m = mount(None, "--auth-file", token_registry.auth_file)
    assert token_registry.host in os.listdir(m.path)
    r = m / token_registry.host
    assert (r / "private/app/v1/manifest.json").read_bytes() == \
        token_registry.client.manifest("private/app", "v1")[0]
