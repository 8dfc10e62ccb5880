"""SPEC §1/§6: `regfs login` checks credentials against the registry before
saving them in docker's config.json (0600, other keys kept), a mount then
reads with them, `regfs logout` removes them; the password is read from stdin
or the terminal without echo, never from the command line."""

import base64
import json
import os
import pty
import select
import subprocess
import time

from harness import REGFS, isolated_env, require_regfs


def _regfs(home, *args, input=None, env=None, timeout=60):
    require_regfs()
    return subprocess.run([str(REGFS), *map(str, args)], env=isolated_env(home, env),
                          input=input, capture_output=True, text=True, timeout=timeout)


def _home(tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


def _login(home, registry, user="alice", password="alice-secret", *extra, env=None):
    return _regfs(home, "login", registry.host, "-u", user, "--password-stdin", *extra,
                  input=password + "\n", env=env)


def _read_private(m, registry, repo):
    assert (m / repo / "v1/manifest.json").read_bytes() == registry.client.manifest(repo, "v1")[0]


def test_login_then_mount_basic(mount, basic_registry, tmp_path):
    home = _home(tmp_path)
    proc = _login(home, basic_registry)
    assert proc.returncode == 0, proc.stderr
    assert "Login Succeeded" in proc.stdout
    config = home / ".docker/config.json"
    assert config.stat().st_mode & 0o777 == 0o600
    auth = json.loads(config.read_text())["auths"][basic_registry.host]["auth"]
    assert base64.b64decode(auth).decode() == "alice:alice-secret"
    m = mount(basic_registry.host, home=home)
    _read_private(m, basic_registry, "demo/hello")


def test_login_then_mount_token(mount, token_registry, tmp_path):
    home = _home(tmp_path)
    proc = _login(home, token_registry)
    assert proc.returncode == 0, proc.stderr
    m = mount(token_registry.host, home=home)
    _read_private(m, token_registry, "private/app")


def test_wrong_password_is_refused_and_not_saved(basic_registry, token_registry, tmp_path):
    home = _home(tmp_path)
    for registry in (basic_registry, token_registry):
        proc = _login(home, registry, "alice", "not-the-password")
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "refused" in proc.stderr
        assert "not-the-password" not in proc.stderr + proc.stdout
    assert not (home / ".docker/config.json").exists()


def test_login_keeps_other_keys_and_uses_docker_config(basic_registry, tmp_path):
    home = _home(tmp_path)
    dc = tmp_path / "dc"
    dc.mkdir()
    (dc / "config.json").write_text(json.dumps({
        "auths": {"other.example": {"auth": "eDp5"}}, "psFormat": "table",
        "credHelpers": {"elsewhere.example": "none"}}))
    proc = _login(home, basic_registry, env={"DOCKER_CONFIG": str(dc)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((dc / "config.json").read_text())
    assert doc["psFormat"] == "table" and doc["credHelpers"] == {"elsewhere.example": "none"}
    assert set(doc["auths"]) == {"other.example", basic_registry.host}
    assert (dc / "config.json").stat().st_mode & 0o777 == 0o600
    assert not (home / ".docker").exists()

    proc = _regfs(home, "logout", basic_registry.host, env={"DOCKER_CONFIG": str(dc)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((dc / "config.json").read_text())
    assert set(doc["auths"]) == {"other.example"} and doc["psFormat"] == "table"


def test_login_auth_file_and_logout(mount, basic_registry, tmp_path):
    home = _home(tmp_path)
    file = tmp_path / "auth.json"
    assert _login(home, basic_registry, "alice", "alice-secret",
                  "--auth-file", file).returncode == 0
    m = mount(basic_registry.host, "--auth-file", file, home=home)
    _read_private(m, basic_registry, "demo/hello")
    assert _regfs(home, "logout", "--auth-file", file, basic_registry.host).returncode == 0
    assert json.loads(file.read_text())["auths"] == {}
    m = mount(basic_registry.host, "--auth-file", file, home=home)
    try:
        (m / "demo/hello/v1/manifest.json").read_bytes()
        raise AssertionError("read without credentials")
    except FileNotFoundError:  # nothing proves it exists without credentials
        pass


def test_login_through_a_credential_helper(basic_registry, tmp_path):
    home = _home(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "helper.log"
    helper = bin_dir / "docker-credential-vault"
    helper.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> '{log}'\n")
    helper.chmod(0o755)
    (home / ".docker").mkdir()
    (home / ".docker/config.json").write_text(json.dumps({"credsStore": "vault"}))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = _login(home, basic_registry, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "docker-credential-vault" in proc.stderr
    assert "alice-secret" not in (home / ".docker/config.json").read_text()
    assert f'"Secret":"alice-secret"' in log.read_text()
    assert _regfs(home, "logout", basic_registry.host, env=env).returncode == 0
    assert f"erase {basic_registry.host}" in log.read_text()


def test_password_is_never_an_argument(basic_registry, tmp_path):
    proc = _regfs(_home(tmp_path), "login", basic_registry.host, "-u", "alice",
                  "-p", "alice-secret")
    assert proc.returncode != 0
    assert "--password-stdin" in proc.stderr


def _read_until(fd, marker, timeout=30):
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_interactive_prompt_without_echo(basic_registry, tmp_path):
    require_regfs()
    home = _home(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(REGFS), "login", basic_registry.host],
                            env=isolated_env(home), stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    try:
        seen = _read_until(master, b"Username: ")
        os.write(master, b"alice\n")
        seen += _read_until(master, b"Password: ")
        os.write(master, b"alice-secret\n")
        seen += _read_until(master, b"Login Succeeded")
        assert proc.wait(timeout=60) == 0, seen
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"alice\r\n" in seen or b"alice\n" in seen  # the user name echoes
    assert b"alice-secret" not in seen
    assert (home / ".docker/config.json").exists()
