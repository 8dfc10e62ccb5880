"""Issue 3: a cache that is lazy, bounded, shared and never wrong.

Every test reads through a real mount of a real docker-registry and checks
what reached the registry (its access log) and what the cache dir holds."""

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import tarfile
import threading

import pytest

from harness import daemon_pids, eventually, is_mounted, reglib, start_registry
from regfs_scripts import mkimage

LARGE_MIB = 64
MIB = 1 << 20


@pytest.fixture(scope="module")
def large_registry(tmp_path_factory, layouts):
    """A registry of its own (tests stop it) with a 64 MiB random layer."""
    r = start_registry(tmp_path_factory, layouts, "cache", samples=[("demo/hello", "v1", "hello")])
    layout = tmp_path_factory.mktemp("large-layout")
    mkimage.build(str(layout), "v1", mkimage.preset("large", large_mib=LARGE_MIB))
    r.pushed["big/blob:v1"] = mkimage.push(str(layout), "v1", f"{r.host}/big/blob:v1")
    manifest = json.loads(r.client.manifest("big/blob", "v1")[0])
    r.large = max(manifest["layers"], key=lambda d: d["size"])
    r.large_bytes_sha = hashlib.sha256(r.client.blob("big/blob", r.large["digest"])).hexdigest()
    yield r
    reglib.stop(r.dir)


def blob_path(m, r):
    return m / "big/blob/v1/blobs/sha256" / r.large["digest"].split(":")[1]


def cache_bytes(cache_dir, *subdirs):
    """Bytes allocated on disk under cache_dir (or its subdirs)."""
    total = 0
    for sub in subdirs or ("",):
        for root, _, files in os.walk(cache_dir / sub):
            for f in files:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def test_ranged_read_fetches_a_small_fraction(mount, large_registry):
    r = large_registry
    m = mount(r.host)
    offset = r.large_offset = 30 * MIB
    with open(blob_path(m, r), "rb") as f:
        f.seek(offset)
        got = f.read(4096)
    whole = r.client.blob("big/blob", r.large["digest"])
    assert got == whole[offset:offset + 4096]
    assert cache_bytes(m.cache_dir, "partial", "blobs") < 8 * MIB, "only the chunk read is cached"


def test_bound_holds_while_reading_a_blob_larger_than_it(mount, large_registry):
    r = large_registry
    m = mount(r.host, "--cache-size", "16M")
    assert sha256_file(blob_path(m, r)) == r.large_bytes_sha
    # One chunk (2 MiB) may be in flight past the bound, plus small metadata
    # (the chunk log, a few blocks).
    assert cache_bytes(m.cache_dir, "partial", "blobs") <= 18 * MIB + 64 * 1024


def test_rootfs_of_a_layer_larger_than_the_bound(mount, large_registry):
    """rootfs/ indexes a plain layer from its whole blob: with the chunks
    of a 64 MiB layer evicted as they came in a 16 MiB cache, it was never
    whole and rootfs/ failed with EIO. Now the layer is held whole past the
    bound while its rootfs/ is in use, and the files read right."""
    r = large_registry
    m = mount(r.host, "--cache-size", "16M")
    layer = r.client.blob("big/blob", r.large["digest"])
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = {i.name.lstrip("./"): i for i in tar.getmembers() if i.isfile()}
        big = max(names.values(), key=lambda i: i.size)
        want = hashlib.sha256(tar.extractfile(big).read()).hexdigest()
    rootfs = m / "big/blob/v1/rootfs"
    assert big.name.lstrip("./") in os.listdir(rootfs)
    assert sha256_file(rootfs / big.name.lstrip("./")) == want


def test_three_concurrent_readers_cost_no_more_requests_than_one(mount, large_registry):
    r = large_registry

    def gets_for(readers):
        m = mount(r.host)
        offset = r.log_offset()
        results = []
        threads = [threading.Thread(target=lambda: results.append(sha256_file(blob_path(m, r))))
                   for _ in range(readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [r.large_bytes_sha] * readers
        return r.blob_gets_since(offset).count(r.large["digest"])

    one = gets_for(1)
    three = gets_for(3)
    assert 0 < three <= one


def test_ranged_reads_one_after_another_share_a_connection(mount, large_registry):
    """A blob range that ends with the response is not aborted: the next
    request goes over the same connection (no new TCP or TLS handshake per
    request)."""
    r = large_registry
    m = mount(r.host)
    path = blob_path(m, r)
    os.stat(path)
    whole = r.client.blob("big/blob", r.large["digest"])
    offset = r.log_offset()
    for at in (10 * MIB, 30 * MIB, 50 * MIB):  # one chunk each, not a stream
        with open(path, "rb") as f:
            f.seek(at)
            assert f.read(4096) == whole[at:at + 4096]
    with open(r.info["log"], "rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    peers = [line.split('http.request.remoteaddr="', 1)[1].split('"', 1)[0] for line in lines
             if 'msg="response completed"' in line and "http.request.method=GET" in line
             and r.large["digest"] in line]
    assert len(peers) == 3, lines
    assert len(set(peers)) == 1, peers


def test_complete_blob_is_verified_and_kept(mount, large_registry):
    r = large_registry
    m = mount(r.host)
    assert sha256_file(blob_path(m, r)) == r.large_bytes_sha
    hexd = r.large["digest"].split(":")[1]
    # The fetcher that stores the last chunk checks the digest after the
    # reader has its bytes.
    assert eventually(lambda: (m.cache_dir / "blobs/sha256" / hexd).is_file()), \
        "a whole verified blob is complete"
    offset = r.log_offset()
    assert sha256_file(blob_path(m, r)) == r.large_bytes_sha
    assert r.large["digest"] not in r.blob_gets_since(offset), "a re-read hits the cache"


def test_cache_dir_is_private(mount, large_registry):
    m = mount(large_registry.host)
    os.listdir(m / "big/blob/v1")
    assert stat.S_IMODE(os.stat(m.cache_dir).st_mode) == 0o700


def corrupt(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_complete_blob_is_never_served(mount, large_registry):
    r = large_registry
    m = mount(r.host)
    assert sha256_file(blob_path(m, r)) == r.large_bytes_sha
    m.unmount()
    corrupt(m.cache_dir / "blobs/sha256" / r.large["digest"].split(":")[1], 12345)
    again = mount(r.host, "--cache-dir", m.cache_dir)
    offset = r.log_offset()
    assert sha256_file(blob_path(again, r)) == r.large_bytes_sha
    assert r.large["digest"] in r.blob_gets_since(offset), "the corrupt file was fetched again"


def test_corrupt_partial_chunk_is_never_served(mount, large_registry):
    r = large_registry
    m = mount(r.host)
    with open(blob_path(m, r), "rb") as f:
        first = f.read(MIB)
    m.unmount()
    corrupt(m.cache_dir / "partial/sha256" / r.large["digest"].split(":")[1], 1000)
    again = mount(r.host, "--cache-dir", m.cache_dir)
    with open(blob_path(again, r), "rb") as f:
        assert f.read(MIB) == first


def test_remount_with_the_registry_down_serves_cached_content(tmp_path_factory, layouts, mount):
    r = start_registry(tmp_path_factory, layouts, "offline",
                       samples=[("demo/hello", "v1", "hello")])
    try:
        m = mount(r.host, "--tag-ttl", "1")
        image = m / "demo/hello/v1"
        before = {name: (image / name).read_bytes()
                  for name in ("manifest.json", "config.json", "index.json")}
        blobs = {p.name: p.read_bytes() for p in (image / "blobs/sha256").iterdir()}
        assert os.listdir(m / "demo/hello") == ["v1"]
        m.unmount()
    finally:
        reglib.stop(r.dir)
    again = mount(r.host, "--tag-ttl", "1", "--cache-dir", m.cache_dir)
    image = again / "demo/hello/v1"
    for name, data in before.items():
        assert (image / name).read_bytes() == data
    assert {p.name: p.read_bytes() for p in (image / "blobs/sha256").iterdir()} == blobs
    assert os.listdir(again / "demo/hello") == ["v1"]
    log = (m.cache_dir / "regfs.log").read_text()
    # The mount says once that the registry is down and it serves the cache.
    assert log.count("is down") == 1 and "serving what is cached" in log, log


def test_cache_du_prune_clear(run_regfs, mount, large_registry):
    r = large_registry
    m = mount(r.host)
    with open(blob_path(m, r), "rb") as f:
        f.read(8 * MIB)
    m.unmount()
    du = run_regfs("cache", "du", "--cache-dir", m.cache_dir)
    assert du.returncode == 0, du.stderr
    assert "partial blobs" in du.stdout and "M" in du.stdout
    pruned = run_regfs("cache", "prune", "--cache-dir", m.cache_dir, "--cache-size", "2M")
    assert pruned.returncode == 0, pruned.stderr
    # The bound counts content; the chunk logs beside it are a few KiB.
    assert cache_bytes(m.cache_dir, "partial", "blobs") <= 2 * MIB + 64 * 1024
    cleared = run_regfs("cache", "clear", "--cache-dir", m.cache_dir)
    assert cleared.returncode == 0, cleared.stderr
    assert cache_bytes(m.cache_dir, "partial", "blobs") == 0
    bad = run_regfs("cache", "explode", "--cache-dir", m.cache_dir)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1


def test_clear_is_refused_while_a_mount_uses_the_cache(run_regfs, mount, large_registry):
    """Emptying a cache under a live mount broke its reads (EIO until a
    remount): clear is refused, names the mount, and removes nothing; prune
    is safe (the mount's own eviction, in another process); a mount killed
    with -9 keeps nothing refused."""
    r = large_registry
    m = mount(r.host)
    with open(blob_path(m, r), "rb") as f:
        f.read(8 * MIB)
    before = cache_bytes(m.cache_dir, "partial", "blobs", "refs")
    cleared = run_regfs("cache", "clear", "--cache-dir", m.cache_dir)
    assert cleared.returncode != 0
    assert f"in use by the regfs mount at {m.path} (pid " in cleared.stderr, cleared.stderr
    assert "regfs umount" in cleared.stderr and "nothing was removed" in cleared.stderr
    # (Readahead may still be adding to it.)
    assert cache_bytes(m.cache_dir, "partial", "blobs", "refs") >= before > 8 * MIB
    assert sha256_file(blob_path(m, r)) == r.large_bytes_sha
    pruned = run_regfs("cache", "prune", "--cache-dir", m.cache_dir, "--cache-size", "2M")
    assert pruned.returncode == 0, pruned.stderr
    assert cache_bytes(m.cache_dir, "partial", "blobs") <= 2 * MIB + 64 * 1024
    assert sha256_file(blob_path(m, r)) == r.large_bytes_sha
    assert json.loads((m / "big/blob/v1/manifest.json").read_bytes())["layers"]
    # A second mount of the same cache: both named.
    m2 = mount(r.host, "--cache-dir", m.cache_dir)
    cleared = run_regfs("cache", "clear", "--cache-dir", m.cache_dir)
    assert cleared.returncode != 0
    assert str(m.path) in cleared.stderr and str(m2.path) in cleared.stderr, cleared.stderr
    m2.unmount()
    # kill -9: the lock goes with the process.
    pids = daemon_pids(m.path)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), within=10)
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
    assert not is_mounted(m.path)
    cleared = run_regfs("cache", "clear", "--cache-dir", m.cache_dir)
    assert cleared.returncode == 0, cleared.stderr
    assert cache_bytes(m.cache_dir, "partial", "blobs") == 0
    assert not os.listdir(m.cache_dir / "mounts"), "stale mount entries are removed"


def test_clear_right_after_umount(run_regfs, mount, large_registry):
    """`regfs umount` returns once the daemon is gone, so a clear that
    follows finds the cache free."""
    m = mount(large_registry.host)
    assert (m / "big/blob/v1/manifest.json").read_bytes()
    proc = run_regfs("umount", m.path)
    assert proc.returncode == 0, proc.stderr
    cleared = run_regfs("cache", "clear", "--cache-dir", m.cache_dir)
    assert cleared.returncode == 0, cleared.stderr


def test_status_shows_cache_use(run_regfs, mount, large_registry):
    r = large_registry
    m = mount(r.host)
    with open(blob_path(m, r), "rb") as f:
        f.read(MIB)
    assert ".regfs" not in os.listdir(m.path), "the control directory is unlisted"
    status = run_regfs("status", m.path)
    assert status.returncode == 0, status.stderr
    assert "cache " in status.stdout and "partial" in status.stdout
    assert "transfers in flight" in status.stdout
    not_regfs = run_regfs("status", m.cache_dir)
    assert not_regfs.returncode != 0 and "not a regfs mount" in not_regfs.stderr
