"""SPEC §6: every source of credentials, in order (first match wins);
auths entries (base64 auth, username/password, identitytoken), credsStore
and credHelpers through docker-credential-<name>; no secret in the log,
--debug output or the process list."""

import base64
import json
import os
from pathlib import Path

import pytest

from harness import daemon_pids

REPO, TAG = "demo/hello", "v1"
# Sources in SPEC §6 order: (name, where the file goes, extra env, options).
SOURCES = ["auth-file", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "containers", "DOCKER_CONFIG",
           "docker", "dockercfg"]


def _b64(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _place(source, home, auths):
    """Writes an auths object where `source` is read from; returns (env, options)."""
    doc = {"auths": auths}
    env, options = {}, []
    if source == "auth-file":
        path = home / "explicit.json"
        options = ["--auth-file", str(path)]
    elif source == "REGISTRY_AUTH_FILE":
        path = home / "env-auth.json"
        env["REGISTRY_AUTH_FILE"] = str(path)
    elif source == "XDG_RUNTIME_DIR":
        path = home / "run/containers/auth.json"
    elif source == "containers":
        path = home / ".config/containers/auth.json"
    elif source == "DOCKER_CONFIG":
        path = home / "dc/config.json"
        env["DOCKER_CONFIG"] = str(home / "dc")
    elif source == "docker":
        path = home / ".docker/config.json"
    else:
        path = home / ".dockercfg"
        doc = auths  # the legacy format: the auths object itself
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return env, options


def _next_source(i):
    # ~/.docker/config.json is not read when DOCKER_CONFIG is set.
    j = i + 1 + (SOURCES[i] == "DOCKER_CONFIG")
    return j if j < len(SOURCES) else None


def _readable(m, registry, repo=REPO, tag=TAG):
    return (m / repo / tag / "manifest.json").read_bytes() == registry.client.manifest(repo, tag)[0]


def _denied(m, repo=REPO, tag=TAG):
    """A repository the registry's catalog proves, refused: EACCES."""
    with pytest.raises(PermissionError):
        (m / repo / tag / "manifest.json").read_bytes()


def _hidden(m, repo=REPO, tag=TAG):
    """Refused where nothing proves the repository exists: ENOENT (SPEC §7)."""
    with pytest.raises(FileNotFoundError):
        (m / repo / tag / "manifest.json").read_bytes()


def _mount_with(mount, registry, tmp_path, placements, *options):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env, opts = {}, list(options)
    for source, auths in placements:
        e, o = _place(source, home, auths)
        env.update(e)
        opts += o
    return mount(registry.host, *opts, home=home, env=env)


@pytest.mark.parametrize("index", range(len(SOURCES)), ids=SOURCES)
def test_each_source_is_read_and_wins_over_later_ones(mount, basic_registry, tmp_path, index):
    good = {basic_registry.host: {"auth": _b64("alice", "alice-secret")}}
    bad = {basic_registry.host: {"auth": _b64("alice", "wrong")}}
    placements = [(SOURCES[index], good)]
    later = _next_source(index)
    if later is not None:
        placements.append((SOURCES[later], bad))
    m = _mount_with(mount, basic_registry, tmp_path, placements)
    assert _readable(m, basic_registry)


@pytest.mark.parametrize("index", [i for i in range(len(SOURCES)) if _next_source(i)],
                         ids=[s for i, s in enumerate(SOURCES) if _next_source(i)])
def test_an_earlier_source_hides_a_later_one(mount, basic_registry, tmp_path, index):
    bad = {basic_registry.host: {"auth": _b64("alice", "wrong")}}
    good = {basic_registry.host: {"auth": _b64("alice", "alice-secret")}}
    m = _mount_with(mount, basic_registry, tmp_path,
                    [(SOURCES[index], bad), (SOURCES[_next_source(index)], good)])
    _hidden(m)


def test_a_file_without_the_registry_does_not_hide_later_files(mount, basic_registry, tmp_path):
    """podman's auth.json for other registries; docker's config.json has ours."""
    m = _mount_with(mount, basic_registry, tmp_path, [
        ("containers", {"other.example": {"auth": _b64("x", "y")}}),
        ("docker", {basic_registry.host: {"auth": _b64("alice", "alice-secret")}}),
    ])
    assert _readable(m, basic_registry)


def test_username_and_password_fields(mount, basic_registry, tmp_path):
    m = _mount_with(mount, basic_registry, tmp_path, [
        ("docker", {f"http://{basic_registry.host}/v2/": {"username": "alice",
                                                          "password": "alice-secret"}})])
    assert _readable(m, basic_registry)


def test_identity_token_uses_the_refresh_token_grant(mount, token_registry, tmp_path):
    token = token_registry.info["identity_token"]
    log = Path(token_registry.info["token_log"])
    before = log.stat().st_size
    m = _mount_with(mount, token_registry, tmp_path,
                    [("docker", {token_registry.host: {"identitytoken": token}})])
    assert _readable(m, token_registry, "private/app", "v1")
    grants = [json.loads(line) for line in log.read_text().splitlines()[-50:]]
    with open(log) as f:
        f.seek(before)
        grants = [json.loads(line) for line in f.read().splitlines()]
    assert any(g["method"] == "POST refresh_token" and g["user"] == "alice" for g in grants)


def test_wrong_identity_token_is_eacces(mount, token_registry, tmp_path):
    m = _mount_with(mount, token_registry, tmp_path,
                    [("docker", {token_registry.host: {"identitytoken": "not-a-token"}})])
    _denied(m, "private/app", "v1")


def _write_helper(bin_dir, name, host, user, secret, log):
    """docker-credential-NAME: answers `get` for host only, like the real ones."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(f"""#!/bin/sh
server=$(cat)
echo "$1 $server" >> '{log}'
[ "$1" = get ] || exit 1
if [ "$server" = '{host}' ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
""")
    path.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _helper_mount(mount, registry, tmp_path, config, user, secret, name):
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker/config.json").write_text(json.dumps(config))
    log = tmp_path / "helper.log"
    env = _write_helper(tmp_path / "bin", name, registry.host, user, secret, log)
    return mount(registry.host, home=home, env=env), log


def test_creds_store_helper(mount, basic_registry, tmp_path):
    m, log = _helper_mount(mount, basic_registry, tmp_path, {"credsStore": "teststore"},
                           "alice", "alice-secret", "teststore")
    assert _readable(m, basic_registry)
    assert f"get {basic_registry.host}" in log.read_text()


def test_cred_helpers_for_the_host(mount, token_registry, tmp_path):
    config = {"credHelpers": {token_registry.host: "testhelper"},
              "auths": {token_registry.host: {"auth": _b64("alice", "wrong")}}}
    m, log = _helper_mount(mount, token_registry, tmp_path, config, "alice", "alice-secret",
                           "testhelper")
    assert _readable(m, token_registry, "private/app", "v1")
    assert f"get {token_registry.host}" in log.read_text()


def test_helper_identity_token(mount, token_registry, tmp_path):
    """A helper's Username "<token>" means an identity token."""
    m, _ = _helper_mount(mount, token_registry, tmp_path,
                         {"credHelpers": {token_registry.host: "tok"}}, "<token>",
                         token_registry.info["identity_token"], "tok")
    assert _readable(m, token_registry, "private/app", "v1")


def _secrets(registry):
    out = ["alice-secret", _b64("alice", "alice-secret")]
    if registry.info.get("identity_token"):
        out.append(registry.info["identity_token"])
    return out


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_no_secret_in_debug_log_or_process_list(mount, basic_registry, token_registry,
                                                tmp_path, kind):
    registry = basic_registry if kind == "basic" else token_registry
    auths = {registry.host: {"auth": _b64("alice", "alice-secret")}}
    if kind == "token":
        auths = {registry.host: {"identitytoken": registry.info["identity_token"]}}
    m = _mount_with(mount, registry, tmp_path, [("docker", auths)], "--debug")
    repo = "private/app" if kind == "token" else REPO
    assert _readable(m, registry, repo, "v1")
    assert sorted(os.listdir(m / repo / "v1/blobs/sha256"))
    # Background mount: the log is <cache_dir>/regfs.log, one line per event.
    text = (m.cache_dir / "regfs.log").read_text()
    assert " regfs debug: HTTP GET " in text
    requests = [line for line in text.splitlines() if "HTTP GET" in line and "/manifests/" in line]
    assert requests and all(line.rstrip().endswith(" ms)") for line in requests), text
    assert any(" -> 200 (" in line for line in requests)
    cmdlines = []
    for pid in daemon_pids(m.path):
        cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    assert cmdlines
    for secret in _secrets(registry):
        assert secret not in text
        assert all(secret not in c for c in cmdlines)
    assert "Authorization" not in text and "Bearer " not in text and "eyJ" not in text


def test_status_shows_a_refused_read(mount, basic_registry, run_regfs):
    """`regfs status` lists the recent error, with the `regfs login` hint."""
    m = mount(basic_registry.host)
    _hidden(m)
    proc = run_regfs("status", m.path)
    assert proc.returncode == 0, proc.stderr
    assert "recent errors" in proc.stdout
    assert "regfs login" in proc.stdout, proc.stdout
    assert "alice-secret" not in proc.stdout
