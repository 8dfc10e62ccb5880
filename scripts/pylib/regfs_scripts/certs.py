"""Test certificates made with the openssl CLI: a CA, server certificates for
loopback signed by it, and a self-signed certificate for a token signing key."""

import os
import subprocess


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_ca(directory, name="regfs test CA"):
    """Writes ca.key and ca.pem into directory; returns (key, cert) paths."""
    key = os.path.join(directory, "ca.key")
    cert = os.path.join(directory, "ca.pem")
    if not os.path.exists(cert):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                 "-days", "3650", "-subj", f"/CN={name}", "-keyout", key, "-out", cert,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, cert


def make_server_cert(directory, ca_key, ca_cert,
                     hosts=("127.0.0.1", "localhost", "regfs-tls.test")):
    """Writes server.key and server.pem (signed by the CA, with SANs for
    hosts) into directory; returns (key, cert) paths. regfs-tls.test is a
    name tests map to 127.0.0.1 to have a TLS registry that is not loopback
    by name."""
    key = os.path.join(directory, "server.key")
    cert = os.path.join(directory, "server.pem")
    csr = os.path.join(directory, "server.csr")
    ext = os.path.join(directory, "server.ext")
    sans = ",".join(("IP:" if h.replace(".", "").isdigit() or ":" in h else "DNS:") + h
                    for h in hosts)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                f"subjectAltName={sans}\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-subj", f"/CN={hosts[0]}", "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", ext, "-out", cert)
    return key, cert


def make_client_cert(directory, ca_key, ca_cert, name="regfs test client"):
    """Writes client.key and client.cert (signed by the CA, for TLS client
    authentication) into directory, named as docker's certs.d expects;
    returns (key, cert) paths."""
    key = os.path.join(directory, "client.key")
    cert = os.path.join(directory, "client.cert")
    csr = os.path.join(directory, "client.csr")
    ext = os.path.join(directory, "client.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=clientAuth\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", ext, "-out", cert)
    return key, cert


def make_signing_cert(directory, name="regfs test token issuer"):
    """Writes token.key and token.pem (self-signed) into directory: the key
    signs bearer tokens, the certificate is the registry's rootcertbundle."""
    key = os.path.join(directory, "token.key")
    cert = os.path.join(directory, "token.pem")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-days", "3650", "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
    return key, cert
