"""Start and stop a local docker-registry (2.8) on loopback, for the demo and
the integration tests.

A registry lives in one directory that holds everything about it:
  config.yml    the registry's configuration
  data/         its storage
  registry.log  its log, with one access-log line per request
  info.json     what a client needs: host, url, auth mode, users, CA, ...
  env           the same as shell assignments (REGISTRY=..., URL=..., ...)
  auth.json     a docker config.json `auths` file with the first user
  *.pid         the processes started (registry, token issuer)
Modes: auth "none", "basic" (htpasswd), "token" (bearer tokens from
token_issuer.py) or "hub" (token auth set up like Docker Hub: no catalog,
library/* public, each user pushing only under their own namespace; users
admin, carol, dave, reader), each with or without TLS (a test CA made here).
"""

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

from . import PYTHON, certs, free_port
from .token_issuer import DEFAULT_RULES, HUB_RULES

DEFAULT_USERS = {"alice": "alice-secret", "bob": "bob-secret"}
HUB_USERS = {"admin": "admin-secret", "carol": "carol-secret", "dave": "dave-secret",
             "reader": "reader-secret"}
SERVICE = "regfs-test-registry"
ISSUER = "regfs-test-issuer"


class RegistryError(Exception):
    pass


def _yaml_config(info, data_dir, maxentries):
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {data_dir}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {info['host']}",
        "  secret: regfs-test-secret",
    ]
    if info["tls"]:
        lines += ["  tls:",
                  f"    certificate: {info['server_cert']}",
                  f"    key: {info['server_key']}"]
        if info.get("client_cert"):
            lines += ["    clientcas:", f"      - {info['ca_cert']}"]
    if info["auth"] == "basic":
        lines += ["auth:", "  htpasswd:", "    realm: regfs-test",
                  f"    path: {info['htpasswd']}"]
    elif info["auth"] in ("token", "hub"):
        lines += ["auth:", "  token:",
                  f"    realm: {info['token_realm']}",
                  f"    service: {SERVICE}",
                  f"    issuer: {ISSUER}",
                  f"    rootcertbundle: {info['token_cert']}"]
    if maxentries:
        lines += ["catalog:", f"  maxentries: {int(maxentries)}"]
    if info.get("proxy"):
        lines += ["proxy:", f"  remoteurl: {info['proxy']}"]
    # Accept foreign layers' urls, as Docker Hub does (distribution's default
    # rejects every manifest that lists one).
    lines += ["validation:", "  manifests:", "    urls:", "      allow:", "        - ^https?://"]
    return "\n".join(lines) + "\n"


def _write_htpasswd(path, users):
    with open(path, "w") as f:
        for user, password in users.items():
            out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                 capture_output=True, text=True).stdout
            f.write(out.strip() + "\n")


def _write_auth_file(path, host, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    with open(path, "w") as f:
        json.dump({"auths": {host: {"auth": token}}}, f, indent=2)
        f.write("\n")
    os.chmod(path, 0o600)


def _spawn(argv, log_path, pid_path):
    log = open(log_path, "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, close_fds=True)
    log.close()
    with open(pid_path, "w") as f:
        f.write(f"{proc.pid}\n")
    return proc


def _wait_http(url, proc, ca_cert=None, timeout=30.0, client=None):
    """Waits until url answers any HTTP status; raises if proc dies first.
    client: (certificate, key) to present."""
    ctx = ssl.create_default_context(cafile=ca_cert) if url.startswith("https") else None
    if client:
        ctx.load_cert_chain(*client)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RegistryError(f"process exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RegistryError(f"no answer from {url} after {timeout:.0f}s")
        time.sleep(0.1)


def _tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def start(directory, auth="none", tls=False, port=None, maxentries=None,
          users=None, rules=None, token_ttl=300, proxy=None, client_auth=False):
    """Starts a registry whose files live in directory; returns its info dict
    once /v2/ answers. Stops what it started if that fails. proxy: the URL of
    an upstream registry, to run as its pull-through cache. client_auth (with
    tls): require a client certificate signed by the test CA (info
    client_cert, client_key)."""
    if auth not in ("none", "basic", "token", "hub"):
        raise RegistryError(f"unknown auth mode {auth!r}")
    if auth == "hub":
        users = HUB_USERS if users is None else users
        rules = HUB_RULES if rules is None else rules
    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, "registry.pid")):
        raise RegistryError(f"{directory} already has a registry; stop it first")
    data_dir = os.path.join(directory, "data")
    os.makedirs(data_dir, exist_ok=True)
    users = dict(DEFAULT_USERS if users is None else users)
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    scheme = "https" if tls else "http"
    info = {
        "dir": directory, "host": host, "url": f"{scheme}://{host}",
        "auth": auth, "tls": tls, "users": users if auth != "none" else {},
        "log": os.path.join(directory, "registry.log"),
        "ca_cert": None, "auth_file": None, "maxentries": maxentries,
        "proxy": proxy,
    }
    if tls:
        ca_key, ca_cert = certs.make_ca(directory)
        info["server_key"], info["server_cert"] = certs.make_server_cert(
            directory, ca_key, ca_cert)
        info["ca_cert"] = ca_cert
        if client_auth:
            info["client_key"], info["client_cert"] = certs.make_client_cert(
                directory, ca_key, ca_cert)
        # A docker/containers-style certs.d directory for skopeo --*-cert-dir.
        cert_dir = os.path.join(directory, "certs.d")
        os.makedirs(cert_dir, exist_ok=True)
        with open(ca_cert) as src, open(os.path.join(cert_dir, "ca.crt"), "w") as dst:
            dst.write(src.read())
        if client_auth:
            for path in (info["client_cert"], info["client_key"]):
                with open(path) as src, open(os.path.join(cert_dir, os.path.basename(path)),
                                             "w") as dst:
                    dst.write(src.read())
        info["cert_dir"] = cert_dir
    if auth == "basic":
        info["htpasswd"] = os.path.join(directory, "htpasswd")
        _write_htpasswd(info["htpasswd"], users)
    if users and auth != "none":
        user, password = next(iter(users.items()))
        info["auth_file"] = os.path.join(directory, "auth.json")
        _write_auth_file(info["auth_file"], host, user, password)
        info["user"], info["password"] = user, password

    procs = []
    try:
        if auth in ("token", "hub"):
            procs.append(_start_issuer(directory, info, users, rules, token_ttl))
        with open(os.path.join(directory, "config.yml"), "w") as f:
            f.write(_yaml_config(info, data_dir, maxentries))
        proc = _spawn(["docker-registry", "serve", os.path.join(directory, "config.yml")],
                      info["log"], os.path.join(directory, "registry.pid"))
        procs.append(proc)
        try:
            _wait_http(info["url"] + "/v2/", proc, info["ca_cert"],
                       client=(info["client_cert"], info["client_key"])
                       if client_auth else None)
        except RegistryError as e:
            raise RegistryError(f"docker-registry on {host} did not start: {e}\n"
                                + _tail(info["log"]))
    except BaseException:
        stop(directory)
        raise
    _write_info(directory, info)
    return info


def _start_issuer(directory, info, users, rules, ttl):
    key, cert = certs.make_signing_cert(directory)
    port = free_port()
    info["token_realm"] = f"http://127.0.0.1:{port}/token"
    info["token_cert"] = cert
    info["token_log"] = os.path.join(directory, "token.log")
    refresh_tokens = {f"{user}-identity-token": user for user in users}
    if users:
        info["identity_token"] = next(iter(refresh_tokens))
    config = {"port": port, "key": key, "cert": cert, "issuer": ISSUER,
              "service": SERVICE, "ttl": ttl, "users": users,
              "refresh_tokens": refresh_tokens,
              "rules": DEFAULT_RULES if rules is None else rules,
              "log": info["token_log"]}
    config_path = os.path.join(directory, "token-issuer.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "token_issuer.py")
    proc = _spawn([PYTHON, script, config_path], os.path.join(directory, "token-issuer.log"),
                  os.path.join(directory, "token-issuer.pid"))
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc)
    except RegistryError as e:
        raise RegistryError(f"token issuer did not start: {e}\n"
                            + _tail(os.path.join(directory, "token-issuer.log")))
    return proc


def _write_info(directory, info):
    with open(os.path.join(directory, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    env = {"REGISTRY": info["host"], "REGISTRY_URL": info["url"],
           "REGISTRY_AUTH": info["auth"], "REGISTRY_DIR": directory,
           "REGISTRY_CA_CERT": info["ca_cert"] or "",
           "REGISTRY_AUTH_FILE_PATH": info["auth_file"] or "",
           "REGISTRY_USER": info.get("user", ""),
           "REGISTRY_PASSWORD": info.get("password", "")}
    with open(os.path.join(directory, "env"), "w") as f:
        for k, v in env.items():
            f.write(f"{k}='{v}'\n")


def load_info(directory):
    with open(os.path.join(os.path.abspath(directory), "info.json")) as f:
        return json.load(f)


def _pid_alive(pid):
    """True while pid runs (a zombie that nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(directory, timeout=10.0):
    """Stops every process whose pid file is in directory. Idempotent."""
    directory = os.path.abspath(directory)
    for name in ("registry.pid", "token-issuer.pid"):
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while True:
                _reap(pid)
                if not _pid_alive(pid) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if _pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _reap(pid)
        os.unlink(path)


def main(argv):
    import argparse
    parser = argparse.ArgumentParser(
        prog="registry",
        description="Start or stop a local docker-registry on 127.0.0.1 for regfs tests.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="start a registry; prints its URL once /v2/ answers")
    s.add_argument("dir", help="directory for config, data, logs and pid files")
    s.add_argument("--auth", choices=["none", "basic", "token", "hub"], default="none",
                   help="hub: token auth like Docker Hub (no catalog, library/* public, "
                        "users admin, carol, dave, reader: password NAME-secret, each "
                        "pushing only under NAME/)")
    s.add_argument("--tls", action="store_true", help="serve HTTPS with a generated test CA")
    s.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    s.add_argument("--maxentries", type=int, help="catalog page size (forces pagination)")
    s.add_argument("--user", action="append", metavar="NAME:PASSWORD",
                   help="users for basic/token auth (default alice, bob)")
    s.add_argument("--rules", metavar="FILE",
                   help="token issuer access rules (JSON list; default: anonymous "
                        "pulls public/*, alice pulls and pushes everything)")
    s.add_argument("--token-ttl", type=int, default=300, help="token lifetime in seconds")
    p = sub.add_parser("stop", help="stop the registry (and token issuer) of a directory")
    p.add_argument("dir")
    i = sub.add_parser("info", help="print info.json of a running registry")
    i.add_argument("dir")
    args = parser.parse_args(argv[1:])

    try:
        if args.command == "start":
            users = None
            if args.user:
                users = dict(u.split(":", 1) for u in args.user)
            rules = None
            if args.rules:
                with open(args.rules) as f:
                    rules = json.load(f)
            info = start(args.dir, auth=args.auth, tls=args.tls, port=args.port,
                         maxentries=args.maxentries, users=users, rules=rules,
                         token_ttl=args.token_ttl)
            print(info["url"])
        elif args.command == "stop":
            stop(args.dir)
        else:
            print(json.dumps(load_info(args.dir), indent=2))
    except (RegistryError, OSError, subprocess.CalledProcessError) as e:
        print(f"registry: {e}", file=sys.stderr)
        return 1
    return 0
