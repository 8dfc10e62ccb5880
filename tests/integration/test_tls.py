"""SPEC §1/§6: HTTPS with --ca-cert, --insecure (loopback is insecure by
default); an unverifiable certificate of another host is EIO, never trusted."""

import os

from harness import assert_reads_by_name, assert_refused_by_name, mount_by_name


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


def test_tls_by_name_with_ca_cert(tmp_path, tls_registry):
    """By a name that is not loopback, the certificate is verified."""
    with mount_by_name(tmp_path, tls_registry, "--ca-cert", tls_registry.ca_cert) as (proc, mp):
        assert_reads_by_name(proc, mp, tls_registry.anonymous)


def test_tls_unverifiable_certificate_is_eio(tmp_path, tls_registry):
    """Without the CA: either the mount refuses with one line, or reading
    gives EIO; never the content."""
    with mount_by_name(tmp_path, tls_registry) as (proc, mp):
        assert_refused_by_name(proc, mp)
