"""What the integration tests share: the test registries (a client and the
access log of each), regfs mounts (mount, unmount, find the daemon) and the
environment a regfs process runs in."""

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "pylib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from regclient import RegistryClient  # noqa: E402
from regfs_scripts import registry as reglib  # noqa: E402
from regfs_scripts import seed as seedlib  # noqa: E402

# REGFS_BIN picks another build of regfs (scripts/test runs build-asan/regfs).
REGFS = Path(os.environ.get("REGFS_BIN") or ROOT / "build" / "regfs").resolve()
MANY_TAGS = [f"t{i:02d}" for i in range(7)]
TLS_NAME = "regfs-tls.test"  # in the test server certificate's SANs
PAGED_REPOS = [f"paged/r{i}" for i in range(5)]


def host_platform():
    """(os, architecture, variant) as OCI names it for this machine."""
    machine = platform.machine()
    return {"x86_64": ("linux", "amd64", None), "aarch64": ("linux", "arm64", "v8"),
            "armv7l": ("linux", "arm", "v7")}.get(machine, ("linux", machine, None))


class Registry:
    """A running test registry: its info, an authenticated client (what curl
    with the right credentials gets) and its access log."""

    def __init__(self, info, pushed):
        self.info = info
        self.host = info["host"]
        self.url = info["url"]
        self.dir = info["dir"]
        self.ca_cert = info.get("ca_cert")
        self.auth_file = info.get("auth_file")
        self.user = info.get("user")
        self.password = info.get("password")
        self.pushed = pushed
        self.client = RegistryClient(self.url, self.user, self.password, self.ca_cert)
        self.anonymous = RegistryClient(self.url, ca_cert=self.ca_cert)

    def digest(self, name):
        return self.pushed[name]["digest"]

    def log_offset(self):
        return os.path.getsize(self.info["log"])

    def requests_since(self, offset):
        """(method, path) of each request in the access log after offset."""
        out = []
        with open(self.info["log"], "rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                # 127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 ...
                start = line.find('] "')
                if start < 0 or "level=" in line:
                    continue
                parts = line[start + 3:].split(" ")
                if len(parts) >= 2:
                    out.append((parts[0], parts[1]))
        return out

    def blob_gets_since(self, offset):
        """Digests fetched with GET .../blobs/<digest> after offset."""
        return [path.split("/blobs/", 1)[1].split("?")[0]
                for method, path in self.requests_since(offset)
                if method == "GET" and "/blobs/" in path]


def start_registry(tmp_path_factory, layouts, name, samples=seedlib.SAMPLES, **kw):
    directory = tmp_path_factory.mktemp(name)
    info = reglib.start(str(directory), **kw)
    try:
        creds = f"{info['user']}:{info['password']}" if info.get("user") else None
        pushed = seedlib.seed(info["host"], str(layouts), creds=creds,
                              cert_dir=info.get("cert_dir"), samples=samples)
    except BaseException:
        reglib.stop(str(directory))
        raise
    return Registry(info, pushed)


def eventually(predicate, within=5.0):
    """Polls predicate until it is true (True) or `within` seconds pass (False)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def registry_health(m):
    """{registry: {"state": "up"|"down", "since": seconds, "last_error": text}}
    from the mount's status document (MOUNT/.regfs/status)."""
    with open(Path(m.path) / ".regfs" / "status") as f:
        doc = json.load(f)
    return {r["registry"]: r for r in doc.get("registries", [])}


def _unescape_mountinfo(field):
    return field.encode().decode("unicode_escape") if "\\" in field else field


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                return True
    return False


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def daemon_pids(mountpoint):
    """Pids of regfs processes (started by these tests) serving mountpoint."""
    target = str(mountpoint)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "regfs" and target in argv:
            pids.append(int(entry))
    return pids


def isolated_env(home, extra=None):
    """The environment of a regfs process: no credentials but those a test
    puts in home (HOME, XDG dirs) or passes in extra."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_RUNTIME_DIR",
                        "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    env["XDG_RUNTIME_DIR"] = str(Path(home) / "run")
    env["XDG_CONFIG_HOME"] = str(Path(home) / ".config")
    env["XDG_CACHE_HOME"] = str(Path(home) / ".cache")
    env.update(extra or {})
    return env


def require_regfs():
    if not os.access(REGFS, os.X_OK):
        pytest.fail(f"{REGFS} is missing: run scripts/build first")


class Mount:
    def __init__(self, path, cache_dir, argv, env):
        self.path = Path(path)
        self.cache_dir = Path(cache_dir)
        self.argv = argv
        self.env = env

    def __truediv__(self, other):
        return self.path / other

    def unmount(self):
        if is_mounted(self.path):
            try:
                subprocess.run([str(REGFS), "umount", str(self.path)], env=self.env,
                               capture_output=True, timeout=60)
            except subprocess.TimeoutExpired:
                pass
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        deadline = time.monotonic() + 10
        pids = daemon_pids(self.path)
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = [p for p in pids if _alive(p)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
            pids = [p for p in pids if _alive(p)]


class Mounter:
    """Makes mounts under base and unmounts them all on close()."""

    def __init__(self, base):
        self.base = Path(base)
        self.mounts = []
        self.count = 0

    def mount(self, registry=None, *options, home=None, env=None, timeout=60):
        """Runs `regfs mount --cache-dir C [OPTIONS] [REGISTRY] MP`; fails
        the test unless it exits 0 with MP mounted."""
        require_regfs()
        self.count += 1
        mp = self.base / f"mnt{self.count}"
        cache = self.base / f"cache{self.count}"
        mp.mkdir(parents=True)
        if home is None:
            home = self.base / f"home{self.count}"
            home.mkdir()
        environment = isolated_env(home, env)
        argv = [str(REGFS), "mount", "--cache-dir", str(cache), *map(str, options)]
        argv += [registry] if registry else []
        argv += [str(mp)]
        m = Mount(mp, cache, argv, environment)
        self.mounts.append(m)
        proc = subprocess.run(argv, env=environment, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        if not is_mounted(mp):
            pytest.fail(f"{' '.join(argv)} exited 0 but {mp} is not mounted")
        return m

    def close(self):
        for m in reversed(self.mounts):
            m.unmount()
        self.mounts = []


def has_tool(name):
    return shutil.which(name) is not None



# A registry reached by a name that is not loopback (loopback skips TLS
# verification): regfs runs in a private mount namespace whose /etc/hosts maps
# TLS_NAME to 127.0.0.1.

def tls_name(registry):
    """TLS_NAME:PORT of the registry."""
    return f"{TLS_NAME}:{registry.host.split(':')[1]}"


def in_namespace(pid, *argv):
    """Runs argv in the mount namespace of pid."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *argv],
                          capture_output=True, text=True, timeout=120)


def _namespace_mounted(pid, mp):
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return any(line.split(" ")[4] == str(mp) for line in f)
    except OSError:
        return False


def _stop_in_namespace(proc, mp):
    if proc.poll() is None:
        in_namespace(proc.pid, "fusermount3", "-u", "-z", str(mp))
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def mount_by_name(tmp_path, registry, *options, binds=()):
    """`regfs mount -f OPTIONS regfs-tls.test:PORT MP` in a private mount
    namespace with that /etc/hosts and each (source, target) of binds
    bind-mounted over its target. Yields (process, mountpoint) once mounted,
    or once the process has exited."""
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing")
    hosts = tmp_path / "hosts"
    with open("/etc/hosts") as f:
        hosts.write_text(f.read() + f"\n127.0.0.1 {TLS_NAME}\n")
    for _, target in binds:
        if not os.path.isdir(target):
            pytest.skip(f"{target} is missing (the test binds a directory over it)")
    script = "".join(f'mount --bind "{s}" "{t}" || exit 99; '
                     for s, t in [(hosts, "/etc/hosts"), *binds]) + 'exec "$@"'
    mp = tmp_path / "mnt"
    mp.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
            str(REGFS), "mount", "-f", "--cache-dir", str(tmp_path / "cache"),
            *map(str, options), tls_name(registry), str(mp)]
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
        _stop_in_namespace(proc, mp)


def assert_reads_by_name(proc, mp, client):
    """The mount of mount_by_name serves demo/hello:v1 as client reads it."""
    assert proc.poll() is None, proc.stderr.read()
    cat = in_namespace(proc.pid, "cat", str(mp / "demo/hello/v1/manifest.json"))
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.encode() == client.manifest("demo/hello", "v1")[0]


def assert_refused_by_name(proc, mp):
    """Either the mount refused with one line, or a read is EIO; never the
    content."""
    if proc.poll() is not None:
        err = proc.stderr.read()
        assert proc.returncode != 0
        assert len(err.strip().splitlines()) == 1, err
        return
    cat = in_namespace(proc.pid, "cat", str(mp / "demo/hello/v1/manifest.json"))
    assert cat.returncode != 0, "read through an unverified certificate"
    assert "Input/output error" in cat.stderr, cat.stderr
