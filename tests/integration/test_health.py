"""Issue 16: never wait on a dead registry for what is already here.

A FaultFront sits between regfs and a real docker-registry and makes it
hang (connections accepted, nothing answered), refuse (its port closed),
reset every request, crawl (1 KiB/s), or flap (down and up every 2 s).
Throughout, what the mount has cached (files, listings, tags past
--tag-ttl) is answered within 1 s; what needs the registry fails within the
one deadline a file operation has (--request-timeout), and at once once the
registry is known to be down; everything recovers within one probe period
(at most 30 s) of the registry coming back. Stale answers are served at
once while one refresh per key runs behind them. Pushes survive kill -9 of
the daemon between the last blob and the manifest, and a flapping registry.

REGFS_FLAP_SECONDS sets the length of the flapping run (default 20, at most
60 as the issue asks).
"""

import errno
import json
import os
import random
import subprocess
import threading
import time
import urllib.request

import pytest

from fault_front import ALL_METHODS, FaultFront
from harness import eventually, is_mounted, registry_health, reglib, start_registry
from regfs_scripts import mkimage
from test_faults import kill_daemon, log_text, read_result, remount_stale

SAMPLES = [("public/hello", "v1", "hello"), ("public/hello", "v2", "alpine-like"),
           ("public/large", "v1", "large"), ("public/alpine", "v1", "alpine-like")]
TIMEOUT = 3  # --request-timeout of the mounts under test
TTL = 2  # --tag-ttl
FAST = 1.0  # what is cached answers within this (the 1 s)
RECOVERY = 30 + TIMEOUT + 5  # one probe period at most, its own answer, a margin
FLAP_SECONDS = min(60.0, float(os.environ.get("REGFS_FLAP_SECONDS", "20")))
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    layouts = tmp_path_factory.mktemp("health-layouts")
    r = start_registry(tmp_path_factory, layouts, "health", samples=SAMPLES)
    yield r
    reglib.stop(r.dir)


@pytest.fixture
def front(registry):
    f = FaultFront(registry.url).start()
    yield f
    f.stop()


def hmount(mount, front, *options):
    return mount(front.host, "--tag-ttl", TTL, "--request-timeout", TIMEOUT, *options)


def timed(fn, *args):
    start = time.monotonic()
    try:
        result = fn(*args)
    except OSError as e:
        result = e.errno
    return result, time.monotonic() - start


def listing(path):
    return sorted(os.listdir(path))


def warm(m, registry):
    """Reads through the mount what the tests then expect from the cache;
    returns [(what, function, argument, expected result)]."""
    client = registry.client
    checks = [("root", listing, m.path, None), ("public/", listing, m / "public", None),
              ("public/hello/", listing, m / "public/hello", None),
              ("v1/", listing, m / "public/hello/v1", None),
              ("v1/blobs/sha256/", listing, m / "public/hello/v1/blobs/sha256", None)]
    manifest = client.manifest("public/hello", "v1")[0]
    checks.append(("manifest.json", read_result, m / "public/hello/v1/manifest.json", manifest))
    for digest, _, _, data in client.reachable("public/hello", "v1"):
        data = data if data is not None else client.blob("public/hello", digest)
        checks.append((digest, read_result, m / "public/hello/v1/blobs/sha256" / digest[7:],
                       data))
    out = []
    for what, fn, arg, expected in checks:
        got = fn(arg)
        assert expected is None or got == expected, what
        out.append((what, fn, arg, got))
    assert "hello" in out[1][3] and "v1" in out[2][3] and "v2" in out[2][3]
    os.listdir(m / "public/large/v1")  # its tag resolved: only the blob is not cached
    return out


def assert_cached_fast(checks, slowest):
    for what, fn, arg, expected in checks:
        got, elapsed = timed(fn, arg)
        assert got == expected, f"{what}: {got!r}"
        assert elapsed < FAST, f"{what} took {elapsed:.2f} s"
        slowest[0] = max(slowest[0], elapsed)


class Large:
    def __init__(self, m, registry):
        digest, size, _, _ = registry.client.reachable("public/large", "v1")[-1]
        assert size > 4 << 20
        self.path = m / "public/large/v1/blobs/sha256" / digest[7:]
        self.data = registry.client.blob("public/large", digest)


def down_lines(m, host):
    text = log_text(m)
    return (text.count(f"Registry {host} is down"), text.count(f"Registry {host} is back up"))


@pytest.mark.parametrize("how", ["hang", "refuse", "reset", "slow"])
def test_cached_answers_at_once_uncached_fails_within_the_deadline(mount, front, registry, how):
    m = hmount(mount, front)
    checks = warm(m, registry)
    large = Large(m, registry)
    time.sleep(TTL + 0.5)  # every tag answer and listing is stale now
    if how == "slow":
        front.add("throttle", rate=1 << 10)  # a 1 KiB/s link
    else:
        front.go_down(how)
    # Through the refreshes that meet the fault, the registry marked down
    # and its first probes: cached things answer within 1 s, every time.
    slowest = [0.0]
    until = time.monotonic() + 3 * TIMEOUT + 2
    while time.monotonic() < until:
        assert_cached_fast(checks, slowest)
        time.sleep(0.2)
    # What needs the registry fails within the operation's deadline.
    got, elapsed = timed(read_result, large.path)
    assert got in (errno.EIO, errno.ETIMEDOUT), got
    assert elapsed < TIMEOUT + 2, elapsed
    if how != "slow":  # (a tag list is a few bytes: it crawls through)
        got, elapsed = timed(listing, m / "public/alpine")  # its tags were never listed
        assert got in (errno.EIO, errno.ETIMEDOUT), got
        assert elapsed < TIMEOUT + 2, elapsed
        # It is known to be down now: regfs status says so, and what needs it
        # fails at once, ETIMEDOUT if a timeout said it was down.
        health = registry_health(m)[front.host]
        assert health["state"] == "down", health
        assert health["last_error"] and health["since"] > 0
        status = subprocess.run([str(m.argv[0]), "status", str(m.path)], capture_output=True,
                                text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert f"{front.host}  down since" in status.stdout, status.stdout
        got, elapsed = timed(read_result, large.path)
        assert got == (errno.ETIMEDOUT if how == "hang" else errno.EIO), got
        assert elapsed < FAST, elapsed
        assert_cached_fast(checks, slowest)
    # Back: within one probe period everything reads again.
    if how == "slow":
        front.clear()
        front.drop_connections()  # the crawling transfers end, and are retried
    else:
        front.go_up()
    assert eventually(lambda: read_result(large.path) == large.data, within=RECOVERY)
    assert "alpine" in os.listdir(m / "public")
    assert "v1" in listing(m / "public/alpine")
    assert_cached_fast(checks, slowest)
    if how != "slow":
        assert eventually(lambda: registry_health(m)[front.host]["state"] == "up", within=5)
        assert down_lines(m, front.host) == (1, 1), log_text(m)[-3000:]
        assert f"{front.host}  up since" in subprocess.run(
            [str(m.argv[0]), "status", str(m.path)], capture_output=True, text=True,
            timeout=30).stdout
    assert is_mounted(m.path)


def test_mounted_while_down_serves_the_cache_at_once(mount, front, registry):
    m = hmount(mount, front)
    checks = warm(m, registry)
    large = Large(m, registry)
    m.unmount()
    front.go_down("refuse")
    proc = subprocess.run(m.argv, env=m.env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "unreachable" in proc.stderr and "serving cached content" in proc.stderr
    # Known down from the start: nothing waits for it, not even the first
    # listing of this process (saved on disk by the one before).
    assert registry_health(m)[front.host]["state"] == "down"
    assert_cached_fast(checks, [0.0])
    got, elapsed = timed(read_result, large.path)
    assert got == errno.EIO and elapsed < FAST, (got, elapsed)
    front.go_up()
    assert eventually(lambda: read_result(large.path) == large.data, within=RECOVERY)
    assert registry_health(m)[front.host]["state"] == "up"


def put_manifest(registry, repo, tag, data):
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", data=data,
                                 method="PUT", headers={"Content-Type": MANIFEST_TYPE})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 201


def tag_requests(front, repo, tag, since):
    return [t for t, method, path, _ in front.log
            if t >= since and path == f"/v2/{repo}/manifests/{tag}"]


def test_stale_answers_at_once_then_the_change_shows(mount, front, registry):
    m = hmount(mount, front)
    v1 = registry.client.manifest("public/hello", "v1")[0]
    v2 = registry.client.manifest("public/hello", "v2")[0]
    put_manifest(registry, "public/hello", "moving", v1)
    moving = m / "public/hello/moving/manifest.json"
    assert read_result(moving) == v1
    assert "moving" in listing(m / "public/hello")
    mtime = os.stat(m / "public/hello").st_mtime_ns
    put_manifest(registry, "public/hello", "moving", v2)
    put_manifest(registry, "public/hello", "extra", v1)
    time.sleep(TTL + 0.5)
    # A slow registry: any answer waited for would take 2 s.
    front.add("delay", seconds=2, methods=ALL_METHODS)
    stale_since = time.monotonic()
    results = []

    def look():
        results.append(timed(read_result, moving))
        results.append(timed(listing, m / "public/hello"))

    threads = [threading.Thread(target=look) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for got, elapsed in results:
        assert got in (v1, v2) or isinstance(got, list), got
        assert elapsed < FAST, elapsed
    assert (v1, ) == tuple({got for got, _ in results if isinstance(got, bytes)})
    # One refresh of the tag, however many lookups found it stale.
    assert eventually(lambda: tag_requests(front, "public/hello", "moving", stale_since),
                      within=10)
    time.sleep(0.5)
    assert len(tag_requests(front, "public/hello", "moving", stale_since)) == 1, front.log[-20:]
    front.clear()
    # The refreshed answers show at the next lookup and listing.
    assert eventually(lambda: read_result(moving) == v2, within=10)
    assert eventually(lambda: "extra" in listing(m / "public/hello"), within=10)
    assert os.stat(m / "public/hello").st_mtime_ns != mtime


def test_tag_ttl_0_always_asks(mount, front, registry):
    m = mount(front.host, "--tag-ttl", 0, "--request-timeout", TIMEOUT)
    v1 = registry.client.manifest("public/hello", "v1")[0]
    v2 = registry.client.manifest("public/hello", "v2")[0]
    put_manifest(registry, "public/hello", "ask", v1)
    path = m / "public/hello/ask/manifest.json"
    assert read_result(path) == v1
    put_manifest(registry, "public/hello", "ask", v2)
    since = time.monotonic()
    assert read_result(path) == v2  # no TTL: asked, and the change is there at once
    assert tag_requests(front, "public/hello", "ask", since)


def test_one_deadline_for_everything_an_operation_chains(mount, front, registry):
    m = mount(front.host, "--request-timeout", TIMEOUT)  # nothing cached
    # Every answer takes 2 s: one request fits the deadline, two do not.
    front.add("delay", seconds=2, methods=ALL_METHODS)
    os.stat(m / "public/alpine/v1")  # one request per lookup: catalog, tag list
    # Looking up manifest.json resolves the tag and fetches the manifest
    # (and the config): one operation, one deadline for all of it.
    got, elapsed = timed(read_result, m / "public/alpine/v1/manifest.json")
    assert got == errno.ETIMEDOUT, got
    assert elapsed < TIMEOUT + 1.5, elapsed
    front.clear()
    expected = registry.client.manifest("public/alpine", "v1")[0]
    assert eventually(lambda: read_result(m / "public/alpine/v1/manifest.json") == expected,
                      within=RECOVERY)


def has_manifest(registry, repo, reference):
    status, _, _ = registry.client.request(f"/v2/{repo}/manifests/{reference}",
                                           {"Accept": MANIFEST_TYPE}, method="HEAD")
    return status == 200


def has_blob(registry, repo, digest):
    return registry.client.request(f"/v2/{repo}/blobs/{digest}", method="HEAD")[0] == 200


def local_image(tmp_path, preset, name):
    layout = tmp_path / name
    descriptor = mkimage.build(str(layout), "x", mkimage.preset(preset))
    blobs = {"sha256:" + p.name: p.read_bytes() for p in (layout / "blobs/sha256").iterdir()}
    return layout, descriptor, blobs


def manifest_puts(registry, offset, repo, tag):
    """Statuses of the PUTs of repo:tag's manifest in the registry's access log."""
    statuses = []
    with open(registry.info["log"], "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            marker = f'"PUT /v2/{repo}/manifests/{tag} '
            if marker in line:
                statuses.append(int(line.split(marker, 1)[1].split('" ', 1)[1].split()[0]))
    return statuses


def test_kill_9_between_the_last_blob_and_the_manifest(mount, front, registry, tmp_path):
    m = hmount(mount, front)
    layout, descriptor, blobs = local_image(tmp_path, "alpine-like", "k9")
    os.makedirs(m / "push/k9")
    front.add("hang", methods=("PUT",), path=r"/manifests/")
    cp = subprocess.Popen(["cp", "-r", str(layout), str(m / "push/k9/v1")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert eventually(lambda: front.served("hang", r"/manifests/"), within=60), front.log[-10:]
    # Every blob went up; the tag was to be written last.
    assert all(has_blob(registry, "push/k9", d) for d in blobs if d != descriptor["digest"])
    kill_daemon(m, cp)
    assert not has_manifest(registry, "push/k9", "v1")
    front.clear()
    resumed_from = len(front.log)
    offset = registry.log_offset()
    remount_stale(m)
    assert eventually(lambda: has_manifest(registry, "push/k9", "v1"), within=60), \
        log_text(m)[-2000:]
    assert registry.client.manifest("push/k9", "v1")[2] == descriptor["digest"]
    # No blob was sent again: the registry had them all.
    assert not [p for _, method, p, _ in front.log[resumed_from:]
                if method in ("POST", "PATCH") and "/blobs/uploads/" in p]
    assert manifest_puts(registry, offset, "push/k9", "v1") == [201]
    assert eventually(lambda: os.getxattr(m / "push/k9/v1", "user.regfs.state") ==
                      b"pushed " + descriptor["digest"].encode(), within=10)


def test_kill_9_during_a_chunked_upload_resumes_it_at_the_registrys_offset(
        mount, front, registry, tmp_path):
    m = hmount(mount, front, "--upload-chunk-size", "5M")
    layout, descriptor, blobs = local_image(tmp_path, "large", "resume")
    large = max(blobs, key=lambda d: len(blobs[d]))
    part = 5 << 20
    assert len(blobs[large]) > part  # two parts
    os.makedirs(m / "push/resume")
    # The first part goes up; the second never reaches the registry.
    front.add("hang", methods=("PATCH", ), path=r"/blobs/uploads/", skip=1)
    cp = subprocess.Popen(["cp", "-r", str(layout), str(m / "push/resume/v1")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert eventually(lambda: front.served("hang"), within=60), front.log[-10:]
    kill_daemon(m, cp)
    assert not has_blob(registry, "push/resume", large)
    front.clear()
    resumed_from = len(front.log)
    remount_stale(m)
    assert eventually(lambda: has_manifest(registry, "push/resume", "v1"), within=60), \
        log_text(m)[-2000:]
    assert registry.client.manifest("push/resume", "v1")[2] == descriptor["digest"]
    assert registry.client.blob("push/resume", large) == blobs[large]
    after = list(zip(front.log[resumed_from:], front.headers[resumed_from:]))
    # The session was asked where it stands, and the upload went on from
    # the registry's offset: no new session, no byte sent twice.
    assert any(method == "GET" and "/blobs/uploads/" in path for (_, method, path, _), _ in after)
    assert not [path for (_, method, path, _), _ in after
                if method == "POST" and "/blobs/uploads/" in path]
    ranges = [h.get("Content-Range") for (_, method, _, _), h in after if method == "PATCH"]
    assert ranges and ranges[0].startswith(f"{part}-"), ranges
    assert "Resuming the upload of blob " + large in log_text(m)


def test_flapping_registry(mount, front, registry, tmp_path):
    m = hmount(mount, front)
    os.makedirs(m / "push/flap")  # first: the root lists "push" throughout
    checks = warm(m, registry)
    layout, descriptor, _ = local_image(tmp_path, "large", "flap")
    offset = registry.log_offset()
    stop = threading.Event()
    problems = []
    slowest = [0.0]
    reads = [0]
    lock = threading.Lock()

    def reader(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            what, fn, arg, expected = rng.choice(checks)
            got, elapsed = timed(fn, arg)
            with lock:
                reads[0] += 1
                slowest[0] = max(slowest[0], elapsed)
                if got != expected:
                    problems.append(f"{what}: {got!r}"[:200])
                elif elapsed >= FAST:
                    problems.append(f"{what} took {elapsed:.2f} s")

    readers = [threading.Thread(target=reader, args=(i, ), daemon=True) for i in range(8)]
    for t in readers:
        t.start()
    front.add("throttle_upload", methods=("PATCH", "PUT"), path=r"/blobs/uploads/",
              rate=4 << 20)
    front.flap(period=2.0, how="refuse")
    cp = subprocess.Popen(["cp", "-r", str(layout), str(m / "push/flap/v1")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(FLAP_SECONDS)
    front.stop_flapping()  # up again
    stop.set()
    for t in readers:
        t.join(30)
        assert not t.is_alive(), "a reader is stuck (deadlock?)"
    assert reads[0] > 100
    assert not problems, problems[:10]
    assert front.transitions >= 2 * int(FLAP_SECONDS / 4)
    # cp's close() returned the push's result, whatever it was; it returns.
    cp.wait(timeout=120)
    # The push ends done, once: the registry's return retries a failed one.
    assert eventually(lambda: has_manifest(registry, "push/flap", "v1"), within=RECOVERY + 60), \
        log_text(m)[-3000:]
    assert registry.client.manifest("push/flap", "v1")[2] == descriptor["digest"]
    assert eventually(lambda: os.getxattr(m / "push/flap/v1", "user.regfs.state") ==
                      b"pushed " + descriptor["digest"].encode(), within=RECOVERY)
    assert manifest_puts(registry, offset, "push/flap", "v1") == [201]
    slowest_left = [0.0]
    assert_cached_fast(checks, slowest_left)
    assert is_mounted(m.path)
    lines = down_lines(m, front.host)
    assert lines[0] >= 1 and lines[0] - lines[1] in (0, 1), lines
    text = json.dumps(registry_health(m))
    assert front.host in text


def test_a_repository_below_a_repository_reads_from_the_cache_while_down(mount, front, registry):
    """`public` is a repository and a namespace (`public/hello`): while the
    registry is down, `hello` in `public` is not taken for an unknown tag of
    `public` that would need the registry (EIO); the cached image reads."""
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    "--dest-tls-verify=false", f"docker://{registry.host}/public/hello:v1",
                    f"docker://{registry.host}/public:latest"], check=True, timeout=120)
    m = hmount(mount, front)
    assert "latest" in listing(m / "public") and "hello" in listing(m / "public")
    manifest = m / "public/hello/v1/manifest.json"
    data = read_result(manifest)
    assert isinstance(data, bytes), data
    time.sleep(TTL + 0.5)  # every answer is stale
    front.go_down("refuse")
    assert read_result(manifest) == data
    assert read_result(manifest) == data  # known down now, still
    front.go_up()
