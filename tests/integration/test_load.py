"""Issue 7: 16 readers over different files and images at once, with pushes
going on, for a minute (REGFS_LOAD_SECONDS; REGFS_SKIP_LOAD=1 skips it):
every read gives the registry's bytes, nothing deadlocks, and the daemon's
peak RSS stays bounded. The cache is smaller than what is read, so chunks
are evicted and fetched again all along.
"""

import hashlib
import os
import random
import subprocess
import threading
import time

import pytest

from harness import daemon_pids, is_mounted, reglib, start_registry
from regfs_scripts import mkimage

SECONDS = float(os.environ.get("REGFS_LOAD_SECONDS", "60"))
READERS = 16
# ASan builds need more (scripts/test raises it for build-asan).
MAX_RSS_KIB = int(os.environ.get("REGFS_LOAD_MAX_RSS_MIB", "256")) << 10
SIZES_MIB = (3, 5, 7, 9)


@pytest.fixture(scope="module")
def load_registry(tmp_path_factory):
    if os.environ.get("REGFS_SKIP_LOAD") == "1":
        pytest.skip("REGFS_SKIP_LOAD=1")
    layouts = tmp_path_factory.mktemp("load-layouts")
    samples = [("load/hello", "v1", "hello"), ("load/alpine", "v1", "alpine-like"),
               ("load/multi", "v1", "multi")]
    r = start_registry(tmp_path_factory, layouts, "load", samples=samples)
    for mib in SIZES_MIB:
        layout = str(layouts / f"large-{mib}")
        mkimage.build(layout, "v1", mkimage.preset("large", large_mib=mib))
        r.pushed[f"load/large{mib}:v1"] = mkimage.push(layout, "v1",
                                                       f"{r.host}/load/large{mib}:v1")
    yield r
    reglib.stop(r.dir)


def _vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _files(m, registry):
    """(path under the mount, expected bytes) of every blob of every image,
    plus manifest.json of each and a few rootfs files."""
    files = []
    repos = ["load/hello", "load/alpine", "load/multi"] + [f"load/large{n}" for n in SIZES_MIB]
    for repo in repos:
        top = m / repo / "v1"
        for digest, _, _, body in registry.client.reachable(repo, "v1"):
            data = body if body is not None else registry.client.blob(repo, digest)
            files.append((top / "blobs/sha256" / digest[7:], data))
        files.append((top / "manifest.json", registry.client.manifest(repo, "v1")[0]))
    files.append((m / "load/hello/v1/rootfs/hello", b"#!/bin/sh\necho hello\n"))
    files.append((m / "load/alpine/v1/rootfs/etc/apk/world", b"busybox\n"))
    return files


def test_sixteen_readers_and_pushes_for_a_minute(mount, load_registry):
    m = mount(load_registry.host, "--cache-size", "24M")
    files = _files(m, load_registry)
    assert sum(len(d) for _, d in files) > 24 << 20
    digests = {p: hashlib.sha256(d).hexdigest() for p, d in files}
    sizes = {p: len(d) for p, d in files}
    data_of = dict(files)
    errors = []
    reads = [0] * READERS
    stop = time.monotonic() + SECONDS

    def reader(i):
        rng = random.Random(i)
        try:
            while time.monotonic() < stop:
                path = files[(i + rng.randrange(len(files))) % len(files)][0]
                if rng.random() < 0.5 or sizes[path] < 4096:
                    with open(path, "rb") as f:
                        got = hashlib.sha256(f.read()).hexdigest()
                    if got != digests[path]:
                        errors.append(f"{path}: wrong bytes")
                else:  # random ranges, as a tar reader or a database would read
                    with open(path, "rb") as f:
                        for _ in range(8):
                            off = rng.randrange(sizes[path])
                            n = rng.randrange(1, 1 << 18)
                            f.seek(off)
                            if f.read(n) != data_of[path][off:off + n]:
                                errors.append(f"{path}: wrong bytes at {off}")
                if rng.random() < 0.1:
                    os.listdir(m / "load")
                reads[i] += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append(f"reader {i}: {e!r}")

    pushes = []

    def pusher():
        n = 0
        try:
            os.makedirs(m / "load/pushed", exist_ok=True)
            while time.monotonic() < stop - 5:
                src = m / ["load/hello", "load/alpine", "load/large3"][n % 3] / "v1"
                dst = m / "load/pushed" / f"t{n}"
                proc = subprocess.run(["cp", "-r", str(src), str(dst)], capture_output=True,
                                      text=True, timeout=120)
                if proc.returncode != 0:
                    errors.append(f"push {dst}: {proc.stderr.strip()}")
                    return
                pushes.append(n)
                n += 1
                time.sleep(1)
        except Exception as e:  # noqa: BLE001
            errors.append(f"pusher: {e!r}")

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    threads.append(threading.Thread(target=pusher, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 120)
    assert not any(t.is_alive() for t in threads), "a reader or the pusher is stuck"
    assert not errors, errors[:10]
    assert all(reads), reads
    assert pushes, "no push completed"
    for n in pushes:
        tags = load_registry.client.tags("load/pushed")
        assert f"t{n}" in tags
    assert is_mounted(m.path)
    pids = daemon_pids(m.path)
    assert pids
    hwm = max(_vm_hwm_kib(pid) for pid in pids)
    assert hwm < MAX_RSS_KIB, f"daemon peak RSS {hwm} KiB"
