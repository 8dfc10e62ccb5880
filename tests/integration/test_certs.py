"""SPEC §1: per-host TLS material as docker and podman keep it:
/etc/docker/certs.d/<host:port>/ and /etc/containers/certs.d/<host:port>/
(ca.crt, and a client certificate NAME.cert with NAME.key). The registry is
reached by a name that is not loopback (loopback skips verification), in a
private mount namespace whose /etc/hosts maps it to 127.0.0.1 and whose
/etc/docker and /etc/containers are test directories."""

import contextlib
import os
import shutil
import subprocess
import time

import pytest

from harness import REGFS, isolated_env, reglib, start_registry

TLS_NAME = "regfs-tls.test"  # in the test server certificate's SANs


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory, layouts):
    """HTTPS that requires a client certificate signed by the test CA."""
    r = start_registry(tmp_path_factory, layouts, "mtls", tls=True, client_auth=True)
    for client in (r.client, r.anonymous):
        client.ctx.load_cert_chain(r.info["client_cert"], r.info["client_key"])
    yield r
    reglib.stop(r.dir)


def _name(registry):
    return f"{TLS_NAME}:{registry.host.split(':')[1]}"


def _certs_d(root, registry, *, ca=True, client=False):
    """root/certs.d/<name>/ with ca.crt and, if asked, client.cert/.key."""
    d = root / "certs.d" / _name(registry)
    d.mkdir(parents=True)
    if ca:
        shutil.copy(registry.ca_cert, d / "ca.crt")
    if client:
        shutil.copy(registry.info["client_cert"], d / "client.cert")
        shutil.copy(registry.info["client_key"], d / "client.key")
    return root


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
def _mount_by_name(tmp_path, registry, *options, etc_docker=None, etc_containers=None):
    """`regfs mount -f OPTIONS regfs-tls.test:PORT MP` in a private mount
    namespace (hosts entry; /etc/docker and /etc/containers replaced by the
    given directories, or empty ones). Yields (process, mountpoint)."""
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing")
    hosts = tmp_path / "hosts"
    with open("/etc/hosts") as f:
        hosts.write_text(f.read() + f"\n127.0.0.1 {TLS_NAME}\n")
    binds = [(hosts, "/etc/hosts")]
    for given, target, name in ((etc_docker, "/etc/docker", "docker"),
                                (etc_containers, "/etc/containers", "containers")):
        source = given or tmp_path / f"empty-{name}"
        source.mkdir(exist_ok=True)
        if not os.path.isdir(target):
            pytest.skip(f"{target} is missing (the test binds a directory over it)")
        binds.append((source, target))
    script = "".join(f'mount --bind "{s}" "{t}" || exit 99; ' for s, t in binds) + 'exec "$@"'
    mp = tmp_path / "mnt"
    mp.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
            str(REGFS), "mount", "-f", "--cache-dir", str(tmp_path / "cache"),
            *map(str, options), _name(registry), str(mp)]
    proc = subprocess.Popen(argv, env=isolated_env(home), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and not _namespace_mounted(proc.pid, mp):
            assert time.monotonic() < deadline, "regfs mount -f never mounted"
            time.sleep(0.1)
        if proc.returncode == 99:
            pytest.skip("cannot bind-mount over /etc in a mount namespace")
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


def _assert_reads(proc, mp, registry):
    assert proc.poll() is None, proc.stderr.read()
    cat = _in_namespace(proc.pid, "cat", str(mp / "demo/hello/v1/manifest.json"))
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.encode() == registry.client.manifest("demo/hello", "v1")[0]


def _assert_refused(proc, mp):
    """Either the mount refuses with one line, or a read is EIO."""
    if proc.poll() is not None:
        assert proc.returncode != 0
        assert len(proc.stderr.read().strip().splitlines()) == 1
        return
    cat = _in_namespace(proc.pid, "cat", str(mp / "demo/hello/v1/manifest.json"))
    assert cat.returncode != 0 and "Input/output error" in cat.stderr, cat.stderr


def test_docker_certs_d_ca(tmp_path, tls_registry):
    etc = _certs_d(tmp_path / "etc-docker", tls_registry)
    with _mount_by_name(tmp_path, tls_registry, etc_docker=etc) as (proc, mp):
        _assert_reads(proc, mp, tls_registry)


def test_containers_certs_d_ca(tmp_path, tls_registry):
    etc = _certs_d(tmp_path / "etc-containers", tls_registry)
    with _mount_by_name(tmp_path, tls_registry, etc_containers=etc) as (proc, mp):
        _assert_reads(proc, mp, tls_registry)


def test_certs_d_of_another_host_is_not_used(tmp_path, tls_registry):
    etc = tmp_path / "etc-docker"
    (etc / "certs.d/elsewhere.test:443").mkdir(parents=True)
    shutil.copy(tls_registry.ca_cert, etc / "certs.d/elsewhere.test:443/ca.crt")
    with _mount_by_name(tmp_path, tls_registry, etc_docker=etc) as (proc, mp):
        _assert_refused(proc, mp)


def test_client_certificate_from_certs_d(tmp_path, mtls_registry):
    etc = _certs_d(tmp_path / "etc-docker", mtls_registry, client=True)
    with _mount_by_name(tmp_path, mtls_registry, etc_docker=etc) as (proc, mp):
        _assert_reads(proc, mp, mtls_registry)


def test_containers_client_certificate(tmp_path, mtls_registry):
    etc = _certs_d(tmp_path / "etc-containers", mtls_registry, client=True)
    with _mount_by_name(tmp_path, mtls_registry, etc_containers=etc) as (proc, mp):
        _assert_reads(proc, mp, mtls_registry)


def test_without_client_certificate_is_refused(tmp_path, mtls_registry):
    etc = _certs_d(tmp_path / "etc-docker", mtls_registry, client=False)
    with _mount_by_name(tmp_path, mtls_registry, etc_docker=etc) as (proc, mp):
        _assert_refused(proc, mp)


def test_ca_cert_option_by_name(tmp_path, tls_registry):
    with _mount_by_name(tmp_path, tls_registry, "--ca-cert", tls_registry.ca_cert) as (proc, mp):
        _assert_reads(proc, mp, tls_registry)


def test_insecure_option_by_name(tmp_path, tls_registry):
    with _mount_by_name(tmp_path, tls_registry, "--insecure", _name(tls_registry)) as (proc, mp):
        _assert_reads(proc, mp, tls_registry)


def test_without_any_ca_is_refused(tmp_path, tls_registry):
    with _mount_by_name(tmp_path, tls_registry) as (proc, mp):
        _assert_refused(proc, mp)
