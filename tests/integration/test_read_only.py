"""A read-only mount (`--read-only`, `-o ro`): everything reads as on a
read-write mount, every change fails with EROFS, and the kernel opens files
without asking the daemon (no OPEN, FLUSH or RELEASE reaches it; READs come
by inode). So what can change says so by its attributes: a moved tag's
files by their mtime, the status file by being made at GETATTR."""

import errno
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from harness import REGFS, daemon_pids, eventually, has_tool, registry_health

IMAGES = ("demo/hello/v1", "demo/hello/v2", "demo/multi/1", "demo/docker/v1",
          "team/project/app/v1")


def snapshot(root):
    """{relative path: (kind, mode, content or link target)} under root,
    rootfs/ (unlisted) included for every image directory met."""
    out = {}

    def walk(d):
        names = sorted(os.listdir(d))
        if "manifest.json" in names:
            names.append("rootfs")
        for name in names:
            p = os.path.join(d, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", st.st_mode, os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", st.st_mode, None)
                walk(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = ("file", st.st_mode, f.read())
            else:
                out[rel] = ("other", st.st_mode, st.st_rdev)
    walk(str(root))
    return out


def test_reads_match_a_read_write_mount(plain_registry, mount):
    rw = mount(plain_registry.host)
    ro = mount(plain_registry.host, "--read-only")
    for image in IMAGES:
        want = snapshot(rw / image)
        assert any(k.startswith("rootfs/") for k in want), image
        assert snapshot(ro / image) == want, image
        assert snapshot(ro / image) == want, image  # again, from the kernel's pages


def test_every_change_fails_with_erofs_and_nothing_is_staged(plain_registry, mount, tmp_path,
                                                             run_regfs):
    ro = mount(plain_registry.host, "--read-only")
    tag = ro / "demo/hello/v1"
    changes = [
        lambda: os.mkdir(ro / "newns"),
        lambda: os.mkdir(ro / "demo/hello/v9"),
        lambda: open(ro / "demo/hello/v9.txt", "wb").close(),
        lambda: os.unlink(tag / "manifest.json"),
        lambda: os.rmdir(tag),
        lambda: os.chmod(tag / "rootfs/hello", 0o600),
        lambda: open(tag / "rootfs/hello", "ab").close(),
        lambda: os.setxattr(tag, "user.x", b"1"),
        lambda: os.rename(tag, ro / "demo/hello/v10"),
        lambda: os.symlink("x", tag / "rootfs/new-link"),
    ]
    for i, change in enumerate(changes):
        with pytest.raises(OSError) as e:
            change()
        assert e.value.errno == errno.EROFS, i
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    proc = subprocess.run(["cp", "-r", str(src), str(ro / "demo/hello/built")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr
    status = json.loads((ro / ".regfs/status").read_bytes())
    assert status["staged"] == []
    assert "built" not in os.listdir(ro / "demo/hello")
    assert "built" not in plain_registry.client.tags("demo/hello")


def fuse_requests_during(pid, action):
    """FUSE requests the daemon `pid` read from /dev/fuse while `action` ran
    (strace of every thread's read(2); a request is a read that returned)."""
    out = f"/tmp/regfs-ro-strace-{pid}.txt"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(pid), "-e", "trace=read",
                               "-o", out], stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: os.path.exists(out) and os.path.getsize(out) > 0, within=10)
        time.sleep(0.3)
        with open(out) as f:
            before = f.read().count("\n")
        action()
        time.sleep(0.3)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    with open(out) as f:
        lines = f.read().splitlines()[before:]
    os.unlink(out)
    return len([line for line in lines if re.search(r"\) = [1-9]\d*$", line)])


@pytest.mark.skipif(not has_tool("strace"), reason="needs strace")
def test_a_warm_open_sends_the_daemon_nothing(plain_registry, mount):
    def opens(path):
        def run():  # as grep does: open, read to the end, close (no isatty ioctl)
            for _ in range(200):
                fd = os.open(path, os.O_RDONLY)
                while os.read(fd, 65536):
                    pass
                os.close(fd)
        return run

    for options, few in ((("--read-only",), True), ((), False)):
        m = mount(plain_registry.host, *options)
        path = m / "demo/hello/v1/rootfs/hello"
        opens(path)()  # warm: looked up, read once
        (pid,) = daemon_pids(m.path)
        requests = fuse_requests_during(pid, opens(path))
        if few:
            assert requests < 20, f"{requests} FUSE requests for 200 warm opens (read-only)"
        else:  # the same loop on a read-write mount: an OPEN per open(2)
            assert requests >= 200, f"{requests} FUSE requests for 200 warm opens"


def put_manifest(registry, repo, tag, data, media_type):
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", data=data,
                                 method="PUT", headers={"Content-Type": media_type})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 201


def test_a_moved_tag_shows_its_new_files(plain_registry, mount):
    """Two manifests of the same size: only the mtime tells the kernel that
    the pages it kept of manifest.json and index.json are stale."""
    raw, _, _ = plain_registry.client.manifest("demo/hello", "v1")
    manifest = json.loads(raw)
    first, second = [dict(manifest, annotations={"regfs.test/which": w})
                     for w in ("first", "other")]
    first_bytes, second_bytes = (json.dumps(d).encode() for d in (first, second))
    assert len(first_bytes) == len(second_bytes)
    put_manifest(plain_registry, "demo/hello", "moving-ro", first_bytes, manifest["mediaType"])
    m = mount(plain_registry.host, "--read-only", "--tag-ttl", "1")
    tag = m / "demo/hello/moving-ro"
    assert (tag / "manifest.json").read_bytes() == first_bytes
    index_before = (tag / "index.json").read_bytes()
    put_manifest(plain_registry, "demo/hello", "moving-ro", second_bytes, manifest["mediaType"])
    assert eventually(lambda: (tag / "manifest.json").read_bytes() == second_bytes, within=15)
    assert eventually(lambda: (tag / "index.json").read_bytes() != index_before, within=15)
    index = json.loads((tag / "index.json").read_bytes())
    assert index["manifests"][0]["size"] == len(second_bytes)


def test_the_status_file_is_made_at_each_read(plain_registry, mount, run_regfs):
    m = mount(plain_registry.host, "--read-only")
    status = m / ".regfs/status"
    before = json.loads(status.read_bytes())
    (m / "library/alpine-like/3/rootfs/etc/os-release").read_bytes()
    after = json.loads(status.read_bytes())  # whole, and newer: the cache grew
    assert after["cache"]["complete_bytes"] > before["cache"]["complete_bytes"]
    assert registry_health(m)[plain_registry.host]["state"] == "up"
    proc = run_regfs("status", m.path)
    assert proc.returncode == 0 and plain_registry.host in proc.stdout, proc.stderr


def test_o_ro_mounts_read_only(plain_registry, mount):
    m = mount(plain_registry.host, "-o", "ro")
    with open("/proc/mounts") as f:
        options = next(line.split()[3] for line in f if line.split()[1] == str(m.path))
    assert "ro" in options.split(",")
    assert (m / "demo/hello/v1/rootfs/hello").read_bytes()
    with pytest.raises(OSError) as e:
        os.mkdir(m / "demo/new")
    assert e.value.errno == errno.EROFS


def test_a_remount_rw_behind_the_daemon_still_changes_nothing(plain_registry, mount):
    m = mount(plain_registry.host, "--read-only")
    assert (m / "demo/hello/v1/rootfs/hello").read_bytes()
    subprocess.run(["mount", "-i", "-o", "remount,rw", str(m.path)], check=True,
                   capture_output=True)
    def write(path, flags):
        fd = os.open(path, flags)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)

    for change in (lambda: os.mkdir(m / "demo/hello/v9"),
                   lambda: write(m / "demo/hello/v1/rootfs/hello", os.O_WRONLY | os.O_APPEND),
                   lambda: write(m / "demo/hello/v1/config.json", os.O_RDWR),
                   lambda: os.setxattr(m / "demo/hello/v1", "user.x", b"1")):
        with pytest.raises(OSError) as e:
            change()
        assert e.value.errno == errno.EROFS
    assert (m / "demo/hello/v1/rootfs/hello").read_bytes()  # the daemon is alive
    status = json.loads((m / ".regfs/status").read_bytes())
    assert status["staged"] == [] and status["read_only"] is True
    shown = subprocess.run([str(REGFS), "status", str(m.path)], capture_output=True, text=True,
                           timeout=60)
    assert shown.stdout.splitlines()[0].endswith(", read-only"), shown.stdout


@pytest.mark.parametrize("options", [("--read-only",), ()], ids=["read-only", "read-write"])
def test_a_tags_files_are_whole_while_it_moves(plain_registry, mount, options):
    """Readers of manifest.json and config.json while the tag moves between
    manifests of different sizes get one of them whole, never one's bytes
    at the other's size."""
    raw, _, _ = plain_registry.client.manifest("demo/hello", "v1")
    manifest = json.loads(raw)
    versions = [json.dumps(dict(manifest, annotations={"n": "x" * n})).encode()
                for n in (1, 300, 40)]
    put_manifest(plain_registry, "demo/hello", "racing", versions[0], manifest["mediaType"])
    m = mount(plain_registry.host, "--tag-ttl", "0", *options)
    tag = m / "demo/hello/racing"
    bad, reads = [], 0
    stop = time.monotonic() + 6
    move = 0
    next_move = time.monotonic() + 0.5
    while time.monotonic() < stop:
        if time.monotonic() >= next_move:
            move += 1
            put_manifest(plain_registry, "demo/hello", "racing", versions[move % 3],
                         manifest["mediaType"])
            next_move = time.monotonic() + 0.5
        data = (tag / "manifest.json").read_bytes()
        reads += 1
        if data not in versions:
            bad.append(data)
        json.loads((tag / "config.json").read_bytes())
    assert move >= 6 and reads > 50, (move, reads)
    assert not bad, f"{len(bad)} of {reads} reads were no manifest pushed: {bad[0][:80]!r}"


def test_regfs_status_says_read_only(plain_registry, mount, run_regfs):
    m = mount(plain_registry.host, "--read-only")
    proc = run_regfs("status", m.path)
    assert proc.returncode == 0, proc.stderr
    assert "read-only" in proc.stdout.splitlines()[0]
