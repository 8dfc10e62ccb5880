"""SPEC §4 "Building by copying": a plain directory copied into a new tag
becomes an image (one layer, as a Dockerfile COPY puts the files, owner
root), pushed once the tag has been quiet for --push-delay, at once by
`regfs push PATH` or `sync -f`, and before `regfs umount` returns; a staged
build survives kill -9. Every pushed image is read back with skopeo and
unpacked with umoci (or read through rootfs/ where umoci cannot: zstd)."""

import base64
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from harness import REGFS, daemon_pids, eventually, has_tool, is_mounted, isolated_env

MTIME = 1700000000


def _app(root):
    """A directory with what a COPY carries: files, modes, a setuid bit,
    directories, a symlink and a hardlink, fixed times."""
    root.mkdir()
    (root / "bin").mkdir()
    hello = root / "bin/hello"
    hello.write_text("#!/bin/sh\necho hello from a build\n")
    hello.chmod(0o755)
    (root / "bin/suid").write_bytes(b"\x7fELF-not-really")
    (root / "bin/suid").chmod(0o4755)
    (root / "etc").mkdir()
    (root / "etc/app.conf").write_text("key=value\n")
    os.setxattr(root / "etc/app.conf", "user.origin", b"a build")
    (root / "etc/secret").write_text("s3cret\n")
    (root / "etc/secret").chmod(0o600)
    os.symlink("hello", root / "bin/hi")
    os.link(root / "etc/app.conf", root / "etc/same.conf")
    (root / "empty").mkdir()
    (root / "data.bin").write_bytes(os.urandom(3 << 20))
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return root


def _copy(src, dst):
    """cp -r keeping modes, times, links and xattrs, as `cp -a` would (less owners)."""
    return subprocess.run(["cp", "-r", "--preserve=mode,timestamps,links,xattr", str(src), str(dst)],
                          capture_output=True, text=True, timeout=300)


def _state(path):
    return os.getxattr(path, "user.regfs.state").decode()


def _pushed(path, within=30):
    assert eventually(lambda: _state(path).startswith("pushed "), within=within), _state(path)
    return _state(path)[len("pushed "):]


def _unpack(registry, ref, tmp_path):
    """skopeo copy + umoci raw unpack of a pushed tag: the rootfs directory."""
    layout = tmp_path / ("oci-" + ref.replace("/", "_").replace(":", "_"))
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/{ref}",
                    f"oci:{layout}:x"], check=True, capture_output=True, timeout=300)
    rootfs = tmp_path / ("rootfs-" + ref.replace("/", "_").replace(":", "_"))
    subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:x", str(rootfs)],
                   check=True, capture_output=True, timeout=300)
    return rootfs


def _assert_same_tree(src, unpacked):
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        got = unpacked / rel
        a, b = os.lstat(path), os.lstat(got)
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode), rel
        if not stat.S_ISLNK(a.st_mode):
            assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode), rel
        assert int(b.st_mtime) == MTIME, rel
        if stat.S_ISREG(a.st_mode):
            assert path.read_bytes() == got.read_bytes(), rel
        if stat.S_ISLNK(a.st_mode):
            assert os.readlink(path) == os.readlink(got), rel
    assert os.getxattr(unpacked / "etc/app.conf", "user.origin") == b"a build"
    same = unpacked / "etc/same.conf"
    assert os.stat(same).st_ino == os.stat(unpacked / "etc/app.conf").st_ino
    assert sorted(p.name for p in unpacked.iterdir()) == sorted(p.name for p in src.iterdir())


@pytest.fixture
def app(tmp_path):
    return _app(tmp_path / "app")


def test_a_plain_directory_becomes_an_image(mount, plain_registry, app, tmp_path):
    if not has_tool("umoci"):
        pytest.skip("umoci missing")
    m = mount(plain_registry.host, "--push-delay", "1")
    os.makedirs(m / "builds/app")
    result = _copy(app, m / "builds/app/v1")
    assert result.returncode == 0, result.stderr
    tag = m / "builds/app/v1"
    assert _state(tag) in ("pending build", "building") or _state(tag).startswith("pushing")
    digest = _pushed(tag)
    assert plain_registry.client.manifest("builds/app", "v1")[2] == digest
    manifest = json.loads(plain_registry.client.manifest("builds/app", "v1")[0])
    assert [l["mediaType"] for l in manifest["layers"]] == \
        ["application/vnd.oci.image.layer.v1.tar+gzip"]
    config = json.loads(plain_registry.client.blob("builds/app", manifest["config"]["digest"]))
    assert config["os"] == "linux" and config["architecture"]
    assert len(config["rootfs"]["diff_ids"]) == 1 and len(config["history"]) == 1
    _assert_same_tree(app, _unpack(plain_registry, "builds/app:v1", tmp_path))
    # Owners are root's, as a Dockerfile COPY makes them.
    layer = plain_registry.client.blob("builds/app", manifest["layers"][0]["digest"])
    listing = subprocess.run(["tar", "-tvz", "--numeric-owner"], input=layer,
                             capture_output=True, check=True).stdout.decode()
    assert listing and all(" 0/0 " in line for line in listing.splitlines()), listing
    # The same files, modes and times give the same image.
    result = _copy(app, m / "builds/app/again")
    assert result.returncode == 0, result.stderr
    assert _pushed(m / "builds/app/again") == digest


def test_regfs_push_and_sync_push_at_once(mount, plain_registry, app, run_regfs, tmp_path):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/now")
    assert _copy(app, m / "builds/now/v1").returncode == 0
    assert _state(m / "builds/now/v1") == "pending build"
    proc = run_regfs("push", m / "builds/now/v1")
    assert proc.returncode == 0, proc.stderr
    digest = proc.stdout.strip()
    assert digest.startswith("sha256:") and _state(m / "builds/now/v1") == "pushed " + digest
    assert plain_registry.client.manifest("builds/now", "v1")[2] == digest
    # sync of the tag directory: fsync(2) of it.
    assert _copy(app, m / "builds/now/v2").returncode == 0
    subprocess.run(["sync", str(m / "builds/now/v2")], check=True, timeout=120)
    assert _state(m / "builds/now/v2").startswith("pushed ")
    # An incomplete layout cannot be pushed: the reason, exit 1.
    os.makedirs(m / "builds/now/half")
    (m / "builds/now/half/oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    proc = run_regfs("push", m / "builds/now/half")
    assert proc.returncode == 1
    assert "incomplete: no index.json or manifest.json" in proc.stderr, proc.stderr
    proc = run_regfs("push", m / "builds")
    assert proc.returncode != 0 and "not a staged tag" in proc.stderr


def test_umount_waits_for_pending_builds(mount, plain_registry, app, run_regfs):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/late")
    assert _copy(app, m / "builds/late/v1").returncode == 0
    assert _state(m / "builds/late/v1") == "pending build"
    proc = run_regfs("umount", m.path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "everything is pushed: nothing to say"
    assert plain_registry.client.manifest("builds/late", "v1")[2].startswith("sha256:")


def test_umount_names_the_staged_tags_left_incomplete(mount, plain_registry, run_regfs):
    """No push failed, but a staged tag cannot be pushed yet (an image
    layout with no index.json): umount said nothing."""
    m = mount(plain_registry.host)
    os.makedirs(m / "builds/half/v1/blobs/sha256")
    proc = run_regfs("umount", m.path)
    assert proc.returncode == 0, proc.stderr
    assert f"staged tags not pushed before unmounting {m.path}:" in proc.stderr, proc.stderr
    assert f"{plain_registry.host}/builds/half:v1  incomplete: " in proc.stderr, proc.stderr
    assert f"staged in {m.cache_dir}/staging" in proc.stderr, proc.stderr
    again = run_regfs("umount", m.path)  # gone: said plainly
    assert again.returncode != 0
    assert f"Cannot unmount {m.path}: no regfs mount there" in again.stderr, again.stderr


def test_umount_of_a_mount_whose_daemon_died(mount, plain_registry):
    """Its mount point answers ENOTCONN: umount said 'filesystem error' and
    left it mounted."""
    m = mount(plain_registry.host)
    for pid in daemon_pids(m.path):
        os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: not daemon_pids(m.path), within=10)
    proc = subprocess.run([str(REGFS), "umount", str(m.path) + "/"], env=m.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not is_mounted(m.path)


def test_umount_says_what_was_not_pushed_while_it_can(mount, token_registry, app, run_regfs,
                                                       tmp_path):
    """A push that fails before unmounting is reported by `regfs umount`
    itself (the tag, its state, where it stays, the log), not by pointing at
    `regfs status`, which cannot tell once the mount is gone."""
    bob = tmp_path / "bob.json"  # bob may pull but not push public/*
    token = base64.b64encode(b"bob:bob-secret").decode()
    bob.write_text(json.dumps({"auths": {token_registry.host: {"auth": token}}}))
    m = mount(token_registry.host, "--auth-file", bob, "--push-delay", "600")
    assert _copy(app, m / "public/hello/denied").returncode == 0
    assert _state(m / "public/hello/denied") == "pending build"
    proc = run_regfs("umount", m.path)
    assert proc.returncode == 0, proc.stderr
    assert not (m.path / "public").exists(), "unmounted"
    assert "regfs status" not in proc.stderr, proc.stderr
    assert f"not pushed before unmounting {m.path}" in proc.stderr, proc.stderr
    assert f"{token_registry.host}/public/hello:denied  error: " in proc.stderr, proc.stderr
    assert f"staged in {m.cache_dir}/staging" in proc.stderr, proc.stderr
    assert f"The log: {m.cache_dir}/regfs.log" in proc.stderr, proc.stderr
    assert "denied" in (m.cache_dir / "regfs.log").read_text()


def test_a_build_survives_kill_9(mount, plain_registry, app, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    m = mount(plain_registry.host, "--push-delay", "600", home=home)
    os.makedirs(m / "builds/killed")
    assert _copy(app, m / "builds/killed/v1").returncode == 0
    for pid in daemon_pids(m.path):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    # The same cache dir: the next mount finishes the build.
    argv = [str(REGFS), "mount", "--cache-dir", str(m.cache_dir), "--push-delay", "600",
            plain_registry.host, str(m.path)]
    proc = subprocess.run(argv, env=isolated_env(home), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert eventually(lambda: _state(m / "builds/killed/v1").startswith("pushed "), within=30), \
        _state(m / "builds/killed/v1")
    assert plain_registry.client.manifest("builds/killed", "v1")[2] == \
        _state(m / "builds/killed/v1")[len("pushed "):]


def test_a_mount_joining_a_cache_in_use_leaves_its_staged_tags_alone(mount, plain_registry, app,
                                                                     run_regfs):
    """Two mounts may share a cache directory. The second one used to push
    the first one's pending build at its start (as if a crash had left it,
    while it could still be being copied in) and to drop the first one's
    pushed tags from under it."""
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "shared/app")
    assert _copy(app, m / "shared/app/v1").returncode == 0
    assert _state(m / "shared/app/v1") == "pending build"
    os.mkdir(m / "shared/hello")
    result = subprocess.run(["cp", "-r", str(m / "demo/hello/v1"), str(m / "shared/hello/v2")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    _pushed(m / "shared/hello/v2")
    other = mount(plain_registry.host, "--cache-dir", m.cache_dir)
    assert os.listdir(other / "demo/hello/v1/rootfs")  # it works
    time.sleep(2)  # a resumed push would have started
    assert "shared/app" not in plain_registry.client.catalog()
    assert _state(m / "shared/app/v1") == "pending build"
    assert _state(m / "shared/hello/v2").startswith("pushed ")
    assert sorted(os.listdir(m / "shared/hello/v2")) == \
        ["blobs", "config.json", "index.json", "manifest.json", "oci-layout"]
    assert json.loads((m / "shared/hello/v2/index.json").read_bytes())["manifests"]
    log = (m.cache_dir / "regfs.log").read_text()
    assert "Another mount uses this cache directory: its staged tags are left to it" in log
    assert _state(other / "shared/app/v1") == "pending build"  # the other mount shows it too
    proc = run_regfs("push", m / "shared/app/v1")
    assert proc.returncode == 0, proc.stderr
    assert "v1" in plain_registry.client.tags("shared/app")
    # ... and what it says follows what the first mount did.
    assert _state(other / "shared/app/v1") == _state(m / "shared/app/v1")


def test_a_directory_longer_than_one_reply_lists_whole(mount, plain_registry, run_regfs,
                                                       tmp_path):
    """A listing longer than the kernel's first READDIRPLUS (1 MiB, about
    6550 names) went on in plain READDIR entries with d_ino 0, which
    readdir(3) skips: ls, find and tar saw the first 6553 names of a
    directory, in a staged tag and in rootfs/ alike."""
    src = tmp_path / "many"
    (src / "d").mkdir(parents=True)
    names = {f"f{i}" for i in range(7000)}
    for name in names:
        (src / "d" / name).write_bytes(b"")
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/many")
    assert _copy(src, m / "builds/many/v1").returncode == 0
    assert set(os.listdir(m / "builds/many/v1/d")) == names
    proc = run_regfs("push", m / "builds/many/v1")
    assert proc.returncode == 0, proc.stderr
    fresh = mount(plain_registry.host)
    rootfs = fresh / "builds/many/v1/rootfs/d"
    for _ in range(2):  # listed by the daemon, then from the kernel's cache
        assert set(os.listdir(rootfs)) == names
    found = subprocess.run(["find", str(rootfs), "-type", "f"], capture_output=True, text=True,
                           timeout=120)
    assert len(found.stdout.splitlines()) == len(names)


def test_zstd_layers_and_the_rootfs_of_a_build(mount, plain_registry, app, run_regfs):
    m = mount(plain_registry.host, "--push-delay", "600", "--layer-compression", "zstd")
    os.makedirs(m / "builds/zst")
    assert _copy(app, m / "builds/zst/v1").returncode == 0
    proc = run_regfs("push", m / "builds/zst/v1")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(plain_registry.client.manifest("builds/zst", "v1")[0])
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    # Read back through a fresh mount's rootfs/ (umoci 0.4.7 reads no zstd).
    m2 = mount(plain_registry.host)
    rootfs = m2 / "builds/zst/v1/rootfs"
    assert (rootfs / "bin/hello").read_bytes() == (app / "bin/hello").read_bytes()
    assert (rootfs / "data.bin").read_bytes() == (app / "data.bin").read_bytes()
    assert os.readlink(rootfs / "bin/hi") == "hello"
    assert stat.S_IMODE(os.stat(rootfs / "bin/suid").st_mode) == 0o4755
    assert os.stat(rootfs / "bin/hello").st_uid == 0


def test_a_layout_still_pushes_at_close(mount, plain_registry, tmp_path):
    """A copied OCI layout is no build: cp returns once it is pushed."""
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/layout")
    result = _copy(m / "demo/hello/v1", m / "builds/layout/v1")
    assert result.returncode == 0, result.stderr
    assert _state(m / "builds/layout/v1") == "pushed " + plain_registry.digest("demo/hello:v1")


def test_config_json_is_a_file(mount, plain_registry):
    """config.json of a staged copy of an image, written back edited, is the
    pushed image's config: same layers, diff_ids and history kept."""
    m = mount(plain_registry.host)
    os.makedirs(m / "edits/app")
    assert _copy(m / "demo/hello/v1", m / "edits/app/v1").returncode == 0
    tag = m / "edits/app/v1"
    base = plain_registry.digest("demo/hello:v1")
    assert _state(tag) == "pushed " + base
    config = json.loads((tag / "config.json").read_bytes())
    config.setdefault("config", {})
    config["config"]["Cmd"] = ["/bin/sh", "-c", "echo edited"]
    config["config"]["Env"] = ["PATH=/usr/bin:/bin", "EDITED=1"]
    config["config"]["WorkingDir"] = "/srv"
    config["config"]["Labels"] = {"org.example.edited": "yes"}
    config["rootfs"] = {"type": "layers", "diff_ids": []}  # kept in step, whatever is written
    offset = plain_registry.log_offset()
    (tag / "config.json").write_text(json.dumps(config))
    digest = _state(tag)[len("pushed "):]
    assert digest != base
    body, _, served = plain_registry.client.manifest("edits/app", "v1")
    assert served == digest
    manifest, original = json.loads(body), json.loads(plain_registry.client.manifest("demo/hello", "v1")[0])
    assert manifest["layers"] == original["layers"]
    pushed = json.loads(plain_registry.client.blob("edits/app", manifest["config"]["digest"]))
    assert pushed["config"]["Cmd"] == ["/bin/sh", "-c", "echo edited"]
    assert pushed["config"]["Labels"] == {"org.example.edited": "yes"}
    old = json.loads(plain_registry.client.blob("demo/hello", original["config"]["digest"]))
    assert pushed["rootfs"] == old["rootfs"] and pushed.get("history") == old.get("history")
    # Only the config and the manifest were sent: the layers are there already.
    sent = [p for m_, p in plain_registry.requests_since(offset) if m_ in ("PUT", "PATCH")]
    assert len([p for p in sent if "/manifests/" in p]) == 1, sent
    assert len([p for p in sent if "/blobs/uploads/" in p]) == 1, sent
    # An invalid config fails the close with EINVAL; the previous one stays.
    before = (tag / "config.json").read_bytes()
    with pytest.raises(OSError) as e:
        with open(tag / "config.json", "w") as f:
            f.write('{"config": {"Cmd": "not a list"}}')
    assert e.value.errno == 22
    assert (tag / "config.json").read_bytes() == before
    assert _state(tag) == "pushed " + digest


@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static missing")
def test_a_built_image_runs_with_chroot_from_the_mount(mount, plain_registry, run_regfs,
                                                       tmp_path):
    """The demo's flow: a directory with a static busybox and a script, its
    command set through config.json, run with chroot from rootfs/."""
    app = tmp_path / "runnable"
    (app / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", app / "bin/busybox")
    os.symlink("busybox", app / "bin/sh")
    (app / "hello.sh").write_text("#!/bin/sh\necho built and run\n")
    (app / "hello.sh").chmod(0o755)
    m = mount(plain_registry.host)
    os.makedirs(m / "builds/run")
    assert _copy(app, m / "builds/run/v1").returncode == 0
    proc = run_regfs("push", m / "builds/run/v1")
    assert proc.returncode == 0, proc.stderr
    built = proc.stdout.strip()
    assert _copy(m / "builds/run" / built, m / "builds/run/v2").returncode == 0
    config = json.loads((m / "builds/run/v2/config.json").read_bytes())
    config["config"]["Cmd"] = ["/hello.sh"]
    (m / "builds/run/v2/config.json").write_text(json.dumps(config))
    edited = _state(m / "builds/run/v2")[len("pushed "):]
    image = m / "builds/run" / edited
    assert json.loads((image / "config.json").read_bytes())["config"]["Cmd"] == ["/hello.sh"]
    cmd = json.loads((image / "config.json").read_bytes())["config"]["Cmd"]
    run = subprocess.run(["chroot", str(image / "rootfs"), *cmd], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "built and run\n"


def test_a_large_file_is_built_in_bounded_memory(mount, plain_registry, run_regfs, tmp_path):
    """The layer streams to a file under the cache dir: the daemon's memory
    does not grow with the file (1 GiB here)."""
    app = tmp_path / "big"
    app.mkdir()
    with open(app / "disk.img", "wb") as f:
        f.truncate(1 << 30)  # sparse: cheap to make, 1 GiB to copy and pack
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/big")
    result = subprocess.run(["cp", "-r", "--sparse=never", str(app), str(m / "builds/big/v1")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    proc = run_regfs("push", m / "builds/big/v1", timeout=600)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(plain_registry.client.manifest("builds/big", "v1")[0])
    config = json.loads(plain_registry.client.blob("builds/big", manifest["config"]["digest"]))
    assert len(config["rootfs"]["diff_ids"]) == 1
    (pid,) = daemon_pids(m.path)
    peak = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status")
                if line.startswith("VmHWM:"))
    assert peak < 200 * 1024, f"daemon peak RSS {peak} KiB while building a 1 GiB layer"


def test_regfs_push_outlasts_the_request_timeout(mount, plain_registry, run_regfs, tmp_path):
    """A build and its push take what they take: `regfs push` (an fsync of
    the tag) is not cut short by --request-timeout, as a close() that
    completes a layout is not. gzip at the level asked for (9, slow)."""
    app = tmp_path / "text"
    app.mkdir()
    for i in range(4):  # hex text: compresses, slowly at level 9
        (app / f"part{i}.txt").write_bytes(os.urandom(8 << 20).hex().encode())
    m = mount(plain_registry.host, "--push-delay", "600", "--request-timeout", "1",
              "--layer-compression-level", "9")
    os.makedirs(m / "builds/slow")
    assert _copy(app, m / "builds/slow/v1").returncode == 0
    start = time.monotonic()
    proc = run_regfs("push", m / "builds/slow/v1", timeout=600)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(plain_registry.client.manifest("builds/slow", "v1")[0])
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer["size"] < 40 << 20, "hex text compresses to about half"
    print(f"push took {took:.1f} s with --request-timeout 1")


def test_cp_a_modes_and_edits_renamed_into_place(mount, plain_registry, app, run_regfs):
    """cp -a sets permissions as ACLs (the mode is what the layer keeps, no
    ACL xattr); sed -i writes a temporary file and renames it over
    config.json (checked and pushed as a close() would); a file renamed in
    a staged tag reads at once under its new name."""
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/cpa")
    result = subprocess.run(["cp", "-a", str(app), str(m / "builds/cpa/v1")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    tag = m / "builds/cpa/v1"
    assert stat.S_IMODE(os.stat(tag / "bin/hello").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tag / "bin/suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(tag / "etc/secret").st_mode) == 0o600
    (tag / "moved.txt.tmp").write_text("moved\n")
    os.rename(tag / "moved.txt.tmp", tag / "moved.txt")
    assert (tag / "moved.txt").read_text() == "moved\n"
    assert run_regfs("push", tag).returncode == 0
    manifest = json.loads(plain_registry.client.manifest("builds/cpa", "v1")[0])
    layer = plain_registry.client.blob("builds/cpa", manifest["layers"][0]["digest"])
    listing = subprocess.run(["tar", "-tvz", "--xattrs"], input=layer, capture_output=True,
                             check=True).stdout.decode()
    modes = {line.split()[-1]: line.split()[0] for line in listing.splitlines()}
    assert modes["bin/hello"] == "-rwxr-xr-x" and modes["bin/suid"] == "-rwsr-xr-x", modes
    raw = subprocess.run(["tar", "-xzO", "--to-stdout"], input=layer, capture_output=True).stdout
    assert b"posix_acl" not in layer and b"moved\n" in raw
    # sed -i of config.json in a staged copy of an image.
    assert _copy(m / "demo/hello/v1", m / "builds/cpa/sed").returncode == 0
    subprocess.run(["sed", "-i", 's#"/hello"#"/bye"#', str(m / "builds/cpa/sed/config.json")],
                   check=True, timeout=60)
    pushed = _state(m / "builds/cpa/sed")[len("pushed "):]
    manifest = json.loads(plain_registry.client.manifest("builds/cpa", "sed")[0])
    assert plain_registry.client.manifest("builds/cpa", "sed")[2] == pushed
    config = json.loads(plain_registry.client.blob("builds/cpa", manifest["config"]["digest"]))
    assert config["config"]["Cmd"] == ["/bye"]


def test_a_directory_with_a_foreign_index_json_is_refused(mount, plain_registry, tmp_path):
    """index.json at the top makes a directory an image layout: one that is
    no OCI index (a web app's) is bad staged content, EINVAL, not pushed."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.json").write_text('{"pages": ["home"]}')
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/web")
    result = _copy(web, m / "builds/web/v1")
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result.stderr
    assert "not an OCI image index" in _state(m / "builds/web/v1")


def test_whiteout_names_are_refused(mount, plain_registry, tmp_path):
    """A file named .wh.* would delete, not add, in a layer: refused (EINVAL)."""
    src = tmp_path / "wh"
    src.mkdir()
    (src / ".wh.gone").write_text("x")
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/wh")
    result = _copy(src, m / "builds/wh/v1")
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result.stderr


def test_a_name_not_utf8_is_refused_and_not_staged(mount, plain_registry, tmp_path):
    """The state and the layer keep UTF-8 paths: another name is EINVAL at
    create, and nothing of it is left in the staged tag."""
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/names")
    tag = m / "builds/names/v1"
    os.mkdir(tag)
    (tag / "ok").write_text("ok\n")
    with pytest.raises(OSError) as raised:
        open(os.fsencode(str(tag)) + b"/bad\xffname", "w").close()
    assert raised.value.errno == errno.EINVAL
    assert os.listdir(tag) == ["ok"]


def test_hardlinks_share_their_mode_and_xattrs(mount, plain_registry, run_regfs, tmp_path):
    """One inode, one mode: a chmod or setfattr of one name of a hardlinked
    file is every name's, in the mount and in the pushed layer (which keeps
    a hardlink's metadata on its first name)."""
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "builds/links")
    src = tmp_path / "links"
    src.mkdir()
    (src / "a").write_text("shared\n")
    assert _copy(src, m / "builds/links/v1").returncode == 0
    tag = m / "builds/links/v1"
    os.link(tag / "a", tag / "b")
    os.chmod(tag / "b", 0o700)
    os.setxattr(tag / "b", "user.note", b"both")
    for name in ("a", "b"):
        assert stat.S_IMODE(os.stat(tag / name).st_mode) == 0o700, name
        assert os.getxattr(tag / name, "user.note") == b"both", name
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(plain_registry.client.manifest("builds/links", "v1")[0])
    layer = plain_registry.client.blob("builds/links", manifest["layers"][0]["digest"])
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", "-", "--xattrs", "--xattrs-include=user.*", "-C", str(out)],
                   input=layer, check=True, timeout=60)
    assert os.stat(out / "a").st_ino == os.stat(out / "b").st_ino
    assert stat.S_IMODE(os.stat(out / "b").st_mode) == 0o700
    assert os.getxattr(out / "a", "user.note") == b"both"


@pytest.mark.parametrize("compression", ["gzip", "estargz"])
def test_fifos_and_devices_are_built(mount, plain_registry, run_regfs, tmp_path, compression):
    """As a COPY carries them: a fifo, a character and a block device, with
    their modes and device numbers, in the layer's tar and in rootfs/ of a
    fresh mount (eStargz: through its table of contents)."""
    src = tmp_path / "special"
    (src / "dev").mkdir(parents=True)
    (src / "hello.txt").write_text("hello\n")
    os.mkfifo(src / "pipe", 0o640)
    os.mknod(src / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "dev/sda", 0o660 | stat.S_IFBLK, os.makedev(8, 0))
    for name, mode in (("pipe", 0o640), ("dev/null", 0o666), ("dev/sda", 0o660)):
        os.chmod(src / name, mode)  # past the umask
    os.link(src / "pipe", src / "pipe2")  # a hardlink: one entry and a link
    m = mount(plain_registry.host, "--push-delay", "600", "--layer-compression", compression)
    tag = m / f"special/app/{compression}"
    os.makedirs(m / "special/app", exist_ok=True)
    proc = subprocess.run(["cp", "-a", str(src), str(tag)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.lstat(tag / "pipe").st_mode)
    assert os.lstat(tag / "dev/null").st_rdev == os.makedev(1, 3)
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr

    manifest = json.loads(plain_registry.client.manifest("special/app", compression)[0])
    layer = plain_registry.client.blob("special/app", manifest["layers"][-1]["digest"])
    listing = subprocess.run(["tar", "-tvz", "--numeric-owner"], input=layer,
                             capture_output=True, check=True).stdout.decode()
    lines = {line.split(" link to ")[0].split()[-1]: line for line in listing.splitlines()}
    assert lines["pipe"].startswith("prw-r----- 0/0"), lines["pipe"]
    assert lines["dev/null"].startswith("crw-rw-rw- 0/0") and " 1,3 " in lines["dev/null"]
    assert lines["dev/sda"].startswith("brw-rw---- 0/0") and " 8,0 " in lines["dev/sda"]
    assert any(line.startswith("hrw-r----- 0/0") and line.endswith(" pipe2 link to pipe")
               for line in listing.splitlines()), listing

    root = mount(plain_registry.host) / f"special/app/{compression}/rootfs"
    st = os.lstat(root / "pipe")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert os.lstat(root / "pipe2").st_ino == st.st_ino and st.st_nlink == 2
    st = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(root / "dev/sda")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 0)
    assert (root / "hello.txt").read_text() == "hello\n"


def test_a_socket_is_refused(mount, plain_registry, tmp_path):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "special/sock/v1")
    with pytest.raises(OSError) as e:
        os.mknod(m / "special/sock/v1/s", 0o644 | stat.S_IFSOCK)
    assert e.value.errno == errno.EPERM
