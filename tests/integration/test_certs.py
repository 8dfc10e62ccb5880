"""SPEC §1: per-host TLS material as docker and podman keep it:
/etc/docker/certs.d/<host:port>/ and /etc/containers/certs.d/<host:port>/
(ca.crt, and a client certificate NAME.cert with NAME.key). The registry is
reached by a name that is not loopback (loopback skips verification), in a
private mount namespace whose /etc/hosts maps it to 127.0.0.1 and whose
/etc/docker and /etc/containers are test directories."""

import shutil

import pytest

from harness import (assert_reads_by_name, assert_refused_by_name, mount_by_name, reglib,
                     start_registry, tls_name)


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory, layouts):
    """HTTPS that requires a client certificate signed by the test CA."""
    r = start_registry(tmp_path_factory, layouts, "mtls", tls=True, client_auth=True)
    for client in (r.client, r.anonymous):
        client.ctx.load_cert_chain(r.info["client_cert"], r.info["client_key"])
    yield r
    reglib.stop(r.dir)


def _certs_d(root, registry, *, ca=True, client=False):
    """root/certs.d/<name>/ with ca.crt and, if asked, client.cert/.key."""
    d = root / "certs.d" / tls_name(registry)
    d.mkdir(parents=True)
    if ca:
        shutil.copy(registry.ca_cert, d / "ca.crt")
    if client:
        shutil.copy(registry.info["client_cert"], d / "client.cert")
        shutil.copy(registry.info["client_key"], d / "client.key")
    return root


def _mount_by_name(tmp_path, registry, *options, etc_docker=None, etc_containers=None):
    """harness.mount_by_name with /etc/docker and /etc/containers replaced by
    the given directories, or empty ones."""
    binds = []
    for given, target, name in ((etc_docker, "/etc/docker", "docker"),
                                (etc_containers, "/etc/containers", "containers")):
        source = given or tmp_path / f"empty-{name}"
        source.mkdir(exist_ok=True)
        binds.append((source, target))
    return mount_by_name(tmp_path, registry, *options, binds=binds)


def _assert_reads(proc, mp, registry):
    assert_reads_by_name(proc, mp, registry.client)


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
        assert_refused_by_name(proc, mp)


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
        assert_refused_by_name(proc, mp)


def test_ca_cert_option_by_name(tmp_path, tls_registry):
    with _mount_by_name(tmp_path, tls_registry, "--ca-cert", tls_registry.ca_cert) as (proc, mp):
        _assert_reads(proc, mp, tls_registry)


def test_insecure_option_by_name(tmp_path, tls_registry):
    with _mount_by_name(tmp_path, tls_registry, "--insecure", tls_name(tls_registry)) as (proc, mp):
        _assert_reads(proc, mp, tls_registry)


def test_without_any_ca_is_refused(tmp_path, tls_registry):
    with _mount_by_name(tmp_path, tls_registry) as (proc, mp):
        assert_refused_by_name(proc, mp)
