"""Issue 7 (SPEC §7): regfs survives network and process faults.

A FaultFront sits between regfs and a real token-auth docker-registry and
injects one fault at a time: a registry that never answers, resets,
truncated and corrupt bodies, 429/503 with Retry-After, a bearer token
revoked mid-transfer. Then process faults: kill -9 of the daemon during a
read (the next mount cleans the stale mount point, the cache is intact) and
during a push (the staged tag is intact and the next mount resumes its
push), and a full disk under the cache dir (ENOSPC, no corrupt cache entry).
Each test also checks that the mount is still up and that the error is
logged.
"""

import errno
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fault_front import FaultFront
from harness import (daemon_pids, eventually, is_mounted, registry_health, reglib,
                     start_registry)
from regfs_scripts import mkimage

SAMPLES = [("public/hello", "v1", "hello"), ("public/large", "v1", "large"),
           ("public/alpine", "v1", "alpine-like")]
TIMEOUT = 3  # -o request_timeout (seconds) of the mounts under test
# A registry that failed is down until a probe sees it back (issue 16): the
# probes are 1 s to 30 s apart, and one may wait TIMEOUT for its answer.
RECOVERY = 30 + TIMEOUT + 5


@pytest.fixture(scope="module")
def fault_registry(tmp_path_factory):
    layouts = tmp_path_factory.mktemp("fault-layouts")
    r = start_registry(tmp_path_factory, layouts, "faults", samples=SAMPLES, auth="token")
    yield r
    reglib.stop(r.dir)


@pytest.fixture
def front(fault_registry):
    f = FaultFront(fault_registry.url).start()
    yield f
    f.stop()


@pytest.fixture
def fmount(mount, front):
    """A mount of the front with a short request deadline, warmed up (the
    scheme is known, the test tags resolved) before any fault is armed."""
    m = mount(front.host, "-o", f"request_timeout={TIMEOUT}")
    for repo in ("public/hello", "public/large"):
        assert "blobs" in os.listdir(m / repo / "v1")
    return m


class Blob:
    def __init__(self, m, registry, repo, which):
        reachable = registry.client.reachable(repo, "v1")
        digest, size, _, _ = reachable[which]
        self.digest = digest
        self.size = size
        self.path = m / repo / "v1/blobs/sha256" / digest[7:]
        self.url_path = f"/v2/{repo}/blobs/{digest}"
        self.data = registry.client.blob(repo, digest)
        assert len(self.data) == size


def large_layer(m, registry):
    b = Blob(m, registry, "public/large", -1)
    assert b.size > 4 << 20  # several 2 MiB chunks
    return b


def hello_layer(m, registry):
    return Blob(m, registry, "public/hello", -1)


def read_result(path):
    """The bytes of path, or the errno reading it failed with."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return e.errno


def in_thread(fn, *args):
    out = {}

    def run():
        start = time.monotonic()
        out["result"] = fn(*args)
        out["elapsed"] = time.monotonic() - start

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def finishes(fn, *args, within):
    t, out = in_thread(fn, *args)
    t.join(within)
    assert not t.is_alive(), f"{fn.__name__}{args} did not finish within {within} s"
    assert "result" in out, f"{fn.__name__}{args} raised"
    return out["result"]


def log_text(m):
    try:
        return (Path(m.cache_dir) / "regfs.log").read_text(errors="replace")
    except OSError:
        return ""


def assert_alive(m):
    assert is_mounted(m.path)
    assert finishes(os.listdir, m.path, within=10) is not None


def assert_cache_consistent(cache_dir):
    """No complete blob differs from its name; every chunk the logs say is
    present matches the hash logged for it."""
    root = Path(cache_dir)
    for blob in (root / "blobs/sha256").glob("*"):
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        assert digest == blob.name, f"corrupt cache entry {blob}"
    for log in (root / "partial/sha256").glob("*.chunks"):
        lines = log.read_text().splitlines()
        if not lines:
            continue
        _, _, size, chunk = lines[0].split()
        chunk = int(chunk)
        present = {}
        for line in lines[1:]:
            fields = line[1:].split()
            if line.startswith("+") and len(fields) == 2:
                present[int(fields[0])] = fields[1]
            elif line.startswith("-") and fields:
                present.pop(int(fields[0]), None)
        data_path = log.with_suffix("")
        with open(data_path, "rb") as f:
            for index, expected in present.items():
                f.seek(index * chunk)
                data = f.read(min(chunk, int(size) - index * chunk))
                assert hashlib.sha256(data).hexdigest() == expected, \
                    f"chunk {index} of {data_path} does not match its log"


def test_never_answering_registry_fails_within_deadline(fmount, front, fault_registry):
    m = fmount
    large = large_layer(m, fault_registry)
    hello = hello_layer(m, fault_registry)
    front.add("hang", path=large.url_path)
    front.add("hang", path=r"/manifests/v9$")
    reader, out = in_thread(read_result, large.path)
    tagger, tag_out = in_thread(read_result, m / "public/hello/v9/manifest.json")
    time.sleep(0.5)
    # Everything else stays responsive while those two wait.
    assert finishes(os.listdir, m.path, within=5)
    assert finishes(os.listdir, m / "public/hello/v1/blobs/sha256", within=5)
    assert finishes(read_result, hello.path, within=5) == hello.data
    for thread, result in ((reader, out), (tagger, tag_out)):
        thread.join(TIMEOUT * 4 + 10)
        assert not thread.is_alive(), "a request to a silent registry hung"
        assert result["result"] in (errno.EIO, errno.ETIMEDOUT), result
        assert result["elapsed"] < TIMEOUT * 4 + 5
    assert front.served("hang", large.url_path)
    front.clear()
    assert eventually(lambda: read_result(large.path) == large.data, within=RECOVERY)
    assert "Timeout" in log_text(m) or "timed out" in log_text(m)
    assert_alive(m)


def test_connection_resets_are_retried(fmount, front, fault_registry):
    m = fmount
    large = large_layer(m, fault_registry)
    front.add("reset", path=large.url_path, times=2)
    assert read_result(large.path) == large.data
    assert len(front.served("reset", large.url_path)) == 2
    hello = hello_layer(m, fault_registry)
    front.add("reset", path=hello.url_path)
    assert read_result(hello.path) == errno.EIO
    assert len(front.served("reset", hello.url_path)) >= 2  # retried before giving up
    front.clear()
    assert eventually(lambda: read_result(hello.path) == hello.data, within=RECOVERY)
    assert hello.digest in log_text(m)
    assert_alive(m)


def test_truncated_body_resumes_from_the_last_byte(fmount, front, fault_registry):
    m = fmount
    large = large_layer(m, fault_registry)
    keep = 1 << 20  # within the first 2 MiB chunk
    front.add("truncate", path=large.url_path, keep=keep, times=1)
    assert read_result(large.path) == large.data
    assert front.served("truncate", large.url_path)
    starts = [int(h["Range"].split("=")[1].split("-")[0])
              for (_, method, path, kind), h in zip(front.log, front.headers)
              if path == large.url_path and kind is None and "Range" in h]
    # The retry resumes after the bytes that arrived, not at a chunk boundary.
    assert any(0 < start <= keep for start in starts), starts
    # A body that never gets anywhere: EIO after the retries.
    hello = hello_layer(m, fault_registry)
    front.add("truncate", path=hello.url_path, keep=0)
    assert read_result(hello.path) == errno.EIO
    front.clear()
    assert eventually(lambda: read_result(hello.path) == hello.data, within=RECOVERY)
    assert_alive(m)


def test_corrupt_bytes_are_never_served_or_cached(fmount, front, fault_registry):
    m = fmount
    for blob in (hello_layer(m, fault_registry), large_layer(m, fault_registry)):
        front.add("corrupt", path=blob.url_path, at=blob.size // 2)
        assert read_result(blob.path) == errno.EIO
        hex_ = blob.digest[7:]
        assert not (m.cache_dir / "blobs/sha256" / hex_).exists()
        assert not (m.cache_dir / "partial/sha256" / (hex_ + ".chunks")).exists()
        front.clear()
        assert read_result(blob.path) == blob.data
        assert eventually(lambda: (m.cache_dir / "blobs/sha256" / hex_).exists())
        assert f"Blob {blob.digest} from the registry has digest" in log_text(m)
    assert_cache_consistent(m.cache_dir)
    assert_alive(m)


def test_corrupt_bytes_are_not_kept_by_the_kernel_of_a_read_only_mount(mount, front,
                                                                       fault_registry):
    # No OPEN there, so the kernel keeps pages across opens: what a reader got
    # before the blob was found wrong must be dropped, not read again.
    m = mount(front.host, "--read-only", "-o", f"request_timeout={TIMEOUT}")
    blob = large_layer(m, fault_registry)
    front.add("corrupt", path=blob.url_path, at=blob.size // 2)
    assert read_result(blob.path) == errno.EIO
    front.clear()
    # The failed reader answers the kernel's repeat of its read; a read a
    # moment later fetches anew, and gets every byte right.
    assert eventually(lambda: read_result(blob.path) == blob.data, within=10)
    assert_alive(m)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(fmount, front, fault_registry, status):
    m = fmount
    hello = hello_layer(m, fault_registry)
    front.add("status", path=hello.url_path, status=status, headers={"Retry-After": "1"},
              times=2)
    assert read_result(hello.path) == hello.data
    times = [t for t, _, _ in front.served("status", hello.url_path)]
    times += [t for t, method, _ in front.served(None, hello.url_path) if method == "GET"]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95
    # A tag answered only with 429/503: EIO (never ENOENT), not cached as a miss.
    front.add("status", path=r"/public/alpine/manifests/v1$", status=status,
              headers={"Retry-After": "0"})
    with pytest.raises(OSError) as info:
        os.listdir(m / "public/alpine/v1")
    assert info.value.errno == errno.EIO
    front.clear()
    # A 503 after the retries marks the registry down until a probe sees it.
    assert eventually(lambda: read_result(m / "public/alpine/v1/manifest.json")
                      == fault_registry.client.manifest("public/alpine", "v1")[0],
                      within=RECOVERY)
    assert "manifest.json" in os.listdir(m / "public/alpine/v1")
    assert_alive(m)


def test_bearer_token_revoked_mid_transfer_is_refreshed(fmount, front, fault_registry):
    m = fmount
    large = large_layer(m, fault_registry)
    time.sleep(2.5)  # the token regfs holds is not one it just fetched
    front.add("revoke_token", path=large.url_path, keep=1 << 20, times=1)
    assert read_result(large.path) == large.data
    assert front.revoked and all(front.revoked)
    blob_auths = [h.get("Authorization") for (_, method, path, _), h
                  in zip(front.log, front.headers) if path == large.url_path]
    assert blob_auths[-1] and blob_auths[-1] not in front.revoked
    assert_alive(m)


def kill_daemon(m, client):
    """kill -9 of the mount's daemon: `client` (a Popen using the mount)
    fails and the mount point answers ENOTCONN."""
    pids = daemon_pids(m.path)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert client.wait(timeout=30) != 0
    with pytest.raises(OSError) as info:
        os.listdir(m.path)
    assert info.value.errno == errno.ENOTCONN


def remount_stale(m):
    """Runs the mount's command again: it cleans the stale mount and mounts."""
    proc = subprocess.run(m.argv, env=m.env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "stale mount" in proc.stderr
    assert is_mounted(m.path)
    return proc


def test_kill_9_during_read_then_remount_cleans_up(fmount, front, fault_registry):
    m = fmount
    hello = hello_layer(m, fault_registry)
    large = large_layer(m, fault_registry)
    assert read_result(hello.path) == hello.data  # complete in the cache
    front.add("throttle", path=large.url_path, rate=1 << 20)
    reader = subprocess.Popen(["cat", str(large.path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not front.served("throttle", large.url_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # some chunks arrived, the read is in flight
    kill_daemon(m, reader)
    front.clear()
    remount_stale(m)
    assert_cache_consistent(m.cache_dir)
    # Cached content is served without the network.
    front.add("reset")
    assert read_result(hello.path) == hello.data
    front.clear()
    assert eventually(lambda: read_result(large.path) == large.data, within=RECOVERY)
    assert_alive(m)


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "small-cache"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_cache_disk_gives_enospc(small_tmpfs, mount, front, fault_registry):
    m = mount(front.host, "--cache-dir", small_tmpfs, "-o", f"request_timeout={TIMEOUT}")
    m.cache_dir = small_tmpfs
    hello = hello_layer(m, fault_registry)
    large = large_layer(m, fault_registry)
    assert read_result(hello.path) == hello.data
    assert read_result(large.path) == errno.ENOSPC
    assert not (small_tmpfs / "blobs/sha256" / large.digest[7:]).exists()
    assert_cache_consistent(small_tmpfs)
    assert read_result(hello.path) == hello.data
    assert_alive(m)
    assert "No space left on device" in log_text(m) or not os.statvfs(small_tmpfs).f_bavail


@pytest.fixture
def push_setup(tmp_path_factory, mount):
    """A plain registry behind a front, mounted, and two local layouts."""
    layouts = tmp_path_factory.mktemp("push-layouts")
    r = start_registry(tmp_path_factory, layouts, "push-faults", samples=[])
    front = FaultFront(r.url).start()
    m = mount(front.host, "-o", f"request_timeout={TIMEOUT}")
    local = []
    for name, preset in (("a", "hello"), ("b", "alpine-like")):
        path = layouts / f"local-{name}"
        mkimage.build(str(path), "x", mkimage.preset(preset))
        local.append(path)
    os.makedirs(m / "push/app")
    yield r, front, m, local
    front.stop()
    reglib.stop(r.dir)


def _cp_r(src, dst):
    return subprocess.run(["cp", "-r", str(src), str(dst)], capture_output=True, text=True,
                          timeout=300)


def test_push_survives_faults_and_leaves_no_half_pushed_tag(push_setup):
    registry, front, m, (a, b) = push_setup
    writes = ("PUT", "POST", "PATCH")
    # Transient faults: retried, the push completes.
    front.add("status", methods=writes, path=r"/manifests/", status=503,
              headers={"Retry-After": "1"}, times=1)
    front.add("reset", methods=writes, path=r"/blobs/uploads/", times=1)
    proc = _cp_r(a, m / "push/app/v1")
    assert proc.returncode == 0, proc.stderr
    assert front.served("status") and front.served("reset")
    assert "v1" in registry.client.tags("push/app")
    # Uploads that keep failing: cp fails, the registry has no such tag.
    front.add("reset", methods=writes, path=r"/blobs/uploads/")
    proc = _cp_r(b, m / "push/app/v2")
    assert proc.returncode != 0
    assert "v2" not in registry.client.tags("push/app")
    assert not any(method == "PUT" and "/manifests/v2" in path
                   for _, method, path, _ in front.log)
    assert_alive(m)
    assert os.getxattr(m / "push/app/v2", "user.regfs.error")
    # Back to normal: once a probe sees the registry answer again (the
    # resets marked it down), touching a staged file (open for writing)
    # retries the push, as the registry's return itself does.
    front.clear()
    assert eventually(lambda: registry_health(m)[front.host]["state"] == "up", within=RECOVERY)
    with open(m / "push/app/v2/index.json", "ab"):
        pass
    assert eventually(lambda: "v2" in registry.client.tags("push/app"), within=60)


def _has_manifest(registry, repo, reference):
    status, _, _ = registry.client.request(f"/v2/{repo}/manifests/{reference}",
                                           {"Accept": "application/vnd.oci.image.manifest.v1+json"},
                                           method="HEAD")
    return status == 200


def _has_blob(registry, repo, digest):
    return registry.client.request(f"/v2/{repo}/blobs/{digest}", method="HEAD")[0] == 200


def test_kill_9_during_push_then_remount_resumes_it(push_setup, tmp_path, mount):
    registry, front, m, _ = push_setup
    layout = tmp_path / "large-layout"
    descriptor = mkimage.build(str(layout), "x", mkimage.preset("large"))
    local = {str(p.relative_to(layout)): p.read_bytes()
             for p in layout.rglob("*") if p.is_file()}
    blobs = {"sha256:" + Path(path).name: data for path, data in local.items()
             if path.startswith("blobs/sha256/")}
    large = max(blobs, key=lambda d: len(blobs[d]))
    assert len(blobs[large]) > 4 << 20
    staged = m / "push/app/v1"

    front.add("throttle_upload", methods=("PATCH", "PUT"), path=r"/blobs/uploads/",
              rate=256 << 10)
    cp = subprocess.Popen(["cp", "-r", str(layout), str(staged)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    assert eventually(lambda: any(method == "PATCH" for _, method, _ in
                                  front.served("throttle_upload")), within=60), front.log
    time.sleep(1.5)  # part of the large blob is sent: the push is in flight
    assert cp.poll() is None, "cp returned before the push finished"
    kill_daemon(m, cp)
    assert not _has_manifest(registry, "push/app", "v1")
    assert not any(method == "PUT" and "/manifests/" in path for _, method, path, _ in front.log)
    assert not _has_blob(registry, "push/app", large)
    uploaded = {d for d in blobs if _has_blob(registry, "push/app", d)}
    assert uploaded  # the small blobs went up beside the large one
    front.clear()
    resumed_from = len(front.log)
    # Slow enough that a second mount of the same cache starts mid-push.
    front.add("throttle_upload", methods=("PATCH", "PUT"), path=r"/blobs/uploads/",
              rate=2 << 20)

    remount_stale(m)
    other = mount(front.host, "-o", f"request_timeout={TIMEOUT}", "--cache-dir", m.cache_dir)
    # The staged tag is intact: whatever cp wrote reads back as it was.
    names = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}
    assert names <= set(local), names - set(local)
    assert "index.json" in names and {f"blobs/sha256/{d[7:]}" for d in blobs} <= names
    for name in names:
        assert (staged / name).read_bytes() == local[name], name
    # ... and its push completes, the tag's manifest last.
    assert eventually(lambda: _has_manifest(registry, "push/app", "v1"), within=120), \
        log_text(m)[-2000:]
    _, _, digest = registry.client.manifest("push/app", "v1")
    assert digest == descriptor["digest"]
    reachable = registry.client.reachable("push/app", "v1")
    assert {d for d, _, _, _ in reachable} == set(blobs)
    for d, _, _, data in reachable:  # manifests and configs come with their bytes
        assert (data if data is not None else registry.client.blob("push/app", d)) == blobs[d], d
    # Blobs the registry got before the kill were not sent again, and the
    # two mounts sharing the cache pushed the rest once.
    finals = [path for _, method, path, _ in front.log[resumed_from:]
              if method == "PUT" and "/blobs/uploads/" in path]
    for path in finals:
        assert not any(d[7:] in path for d in uploaded), path
    assert sum(large[7:] in path for path in finals) == 1, finals
    other.unmount()  # waits for its resume, which found the push done
    text = log_text(m)
    assert text.count(f"Resuming push of {front.host}/push/app:v1") == 1, text[-3000:]
    assert "Resumed push of" in text
    assert eventually(lambda: os.getxattr(staged, "user.regfs.digest") ==
                      descriptor["digest"].encode(), within=10)
    assert_alive(m)
