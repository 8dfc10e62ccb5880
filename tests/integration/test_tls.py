"""SPEC §1/§6: HTTPS with --ca-cert, --insecure (loopback is insecure by
default); an unverifiable certificate of another host is EIO, never trusted."""

import contextlib
import os
import shutil
import subprocess
import time

import pytest

from harness import REGFS, isolated_env


def _assert_readable(m, registry):
    body = registry.anonymous.manifest("demo/hello", "v1")[0]
    assert (m / "demo/hello/v1/manifest.json").read_bytes() == body
    assert "v1" in os.listdir(m / "demo/hello")


def test_tls_with_ca_cert(mount, tls_registry):
    m = mount(tls_registry.host, "--ca-cert", tls_registry.ca_cert)
    _assert_readable(m, tls_registry)
    layer = m / "demo/hello/v1/blobs/sha256"
    for name in os.listdir(layer):
        assert (layer / name).read_bytes()


def test_tls_with_insecure(mount, tls_registry):
    m = mount(tls_registry.host, "--insecure", tls_registry.host)
    _assert_readable(m, tls_registry)


def test_tls_loopback_without_ca_is_insecure_by_default(mount, tls_registry):
    """SPEC §1: --insecure defaults to loopback hosts (as docker does)."""
    m = mount(tls_registry.host)
    _assert_readable(m, tls_registry)


TLS_NAME = "regfs-tls.test"  # in the test server certificate's SANs


def _in_namespace(pid, *argv):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *argv],
                          capture_output=True, text=True, timeout=120)


def _namespace_mounted(pid, mp):
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return any(line.split(" ")[4] == str(mp) for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def _mount_by_name(tmp_path, registry, *options):
    """Runs `regfs mount -f OPTIONS regfs-tls.test:PORT MP` in a private mount
    namespace whose /etc/hosts maps that name to 127.0.0.1, so that the
    registry is not loopback by name. Yields (process, mountpoint) once
    mounted, or once the process has exited."""
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing")
    name = f"{TLS_NAME}:{registry.host.split(':')[1]}"
    hosts = tmp_path / "hosts"
    with open("/etc/hosts") as f:
        hosts.write_text(f.read() + f"\n127.0.0.1 {TLS_NAME}\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    script = 'mount --bind "$1" /etc/hosts || exit 99; shift; exec "$@"'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(hosts),
            str(REGFS), "mount", "-f", "--cache-dir", str(tmp_path / "cache"),
            *map(str, options), name, str(mp)]
    proc = subprocess.Popen(argv, env=isolated_env(home), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and not _namespace_mounted(proc.pid, mp):
            assert time.monotonic() < deadline, "regfs mount -f never mounted"
            time.sleep(0.1)
        if proc.returncode == 99:
            pytest.skip("cannot bind-mount /etc/hosts in a mount namespace")
        yield proc, mp
    finally:
        if proc.poll() is None:
            _in_namespace(proc.pid, "fusermount3", "-u", "-z", str(mp))
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_tls_by_name_with_ca_cert(tmp_path, tls_registry):
    with _mount_by_name(tmp_path, tls_registry, "--ca-cert", tls_registry.ca_cert) as (proc, mp):
        assert proc.poll() is None, proc.stderr.read()
        cat = _in_namespace(proc.pid, "cat", str(mp / "demo/hello/v1/manifest.json"))
        assert cat.returncode == 0, cat.stderr
        assert cat.stdout.encode() == tls_registry.anonymous.manifest("demo/hello", "v1")[0]


def test_tls_unverifiable_certificate_is_eio(tmp_path, tls_registry):
    """Without the CA: either the mount refuses with one line, or reading
    gives EIO; never the content."""
    with _mount_by_name(tmp_path, tls_registry) as (proc, mp):
        if proc.poll() is not None:
            err = proc.stderr.read()
            assert proc.returncode != 0
            assert len(err.strip().splitlines()) == 1, err
            return
        cat = _in_namespace(proc.pid, "cat", str(mp / "demo/hello/v1/manifest.json"))
        assert cat.returncode != 0, "read through an unverified certificate"
        assert "Input/output error" in cat.stderr, cat.stderr
