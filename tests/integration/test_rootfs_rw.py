"""SPEC §4 "Building by copying": rootfs/ of a staged copy of an image is
writable (a layer on a base). Changes show at once through the mount; the
push adds exactly one layer on the base's layers, which are mounted from
the base's repository, never uploaded; the pushed image, unpacked with
skopeo + umoci and read through a fresh mount's rootfs/, has the changes."""

import errno
import json
import os
import signal
import stat
import subprocess
import time
import urllib.parse

import pytest

from harness import REGFS, daemon_pids, eventually, has_tool, isolated_env
from test_push import uploads


def _state(path):
    return os.getxattr(path, "user.regfs.state").decode()


def _cp(src, dst):
    return subprocess.run(["cp", "-r", str(src), str(dst)], capture_output=True, text=True,
                          timeout=300)


def _unpack(registry, ref, tmp_path):
    """skopeo copy (layers recompressed to gzip: umoci 0.4.7 reads no zstd)
    + umoci raw unpack of a pushed tag: the rootfs directory."""
    name = ref.replace("/", "_").replace(":", "_")
    layout = tmp_path / ("oci-" + name)
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-compress",
                    "--dest-compress-format", "gzip", f"docker://{registry.host}/{ref}",
                    f"oci:{layout}:x"], check=True, capture_output=True, timeout=300)
    rootfs = tmp_path / ("rootfs-" + name)
    subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:x", str(rootfs)],
                   check=True, capture_output=True, timeout=300)
    return rootfs


def _edit(root):
    """Every kind of change, in rootfs/ of the staged copy of demo/hello:v2."""
    (root / "etc/added").write_text("added\n")                      # a new file
    (root / "etc/os-release").write_text("NAME=edited\n")           # overwritten (copy-up)
    with open(root / "bin/busybox", "a") as f:                      # appended (copy-up)
        f.write("echo appended\n")
    os.truncate(root / "usr/bin/su", 0)                             # truncated
    os.unlink(root / "bin/ls")                                      # rm: a whiteout
    subprocess.run(["rm", "-r", str(root / "usr/share")], check=True, timeout=60)  # rm -r
    os.mkdir(root / "opt")                                          # mkdir
    (root / "opt/app.sh").write_text("#!/bin/sh\necho app\n")
    os.chown(root / "opt/app.sh", 1000, 1001)                       # chown (clears setuid: first)
    os.chmod(root / "opt/app.sh", 0o4755)                           # chmod of a new file
    os.chmod(root / "bin/busybox", 0o4755)                          # chmod of a changed one
    os.chmod(root / "etc/apk/world", 0o600)                         # chmod of a base file
    os.symlink("/opt/app.sh", root / "usr/bin/app")                 # ln -s
    os.link(root / "etc/added", root / "etc/added-link")            # ln
    subprocess.run(["setfattr", "-n", "user.note", "-v", "hi", str(root / "etc/added")],
                   check=True, timeout=60)                          # setfattr
    # mv: a directory of the base is EXDEV (as overlayfs), so mv copies and deletes.
    with pytest.raises(OSError) as raised:
        os.rename(root / "etc/apk", root / "etc/apk2")
    assert raised.value.errno == errno.EXDEV
    subprocess.run(["mv", str(root / "etc/apk"), str(root / "etc/apk2")], check=True, timeout=60)
    os.rename(root / "etc/added-link", root / "etc/linked")         # mv of a file


def _check(root, pushed=False):
    """What _edit() made, as read through `root` (rootfs/ or an unpacked one)."""
    assert (root / "etc/added").read_text() == "added\n"
    assert (root / "etc/os-release").read_text() == "NAME=edited\n"
    assert (root / "bin/busybox").read_text().endswith("echo appended\n")
    assert (root / "bin/busybox").read_text().startswith("#!/bin/sh\n")
    assert os.stat(root / "usr/bin/su").st_size == 0
    assert stat.S_IMODE(os.stat(root / "usr/bin/su").st_mode) == 0o4755
    assert not os.path.lexists(root / "bin/ls") and "ls" not in os.listdir(root / "bin")
    assert not os.path.lexists(root / "usr/share") and "share" not in os.listdir(root / "usr")
    assert (root / "opt/app.sh").read_text() == "#!/bin/sh\necho app\n"
    assert stat.S_IMODE(os.stat(root / "opt/app.sh").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(root / "bin/busybox").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(root / "etc/apk2/world").st_mode) == 0o600
    assert (root / "etc/apk2/world").read_text() == "busybox\n"
    assert not os.path.lexists(root / "etc/apk")
    assert os.readlink(root / "usr/bin/app") == "/opt/app.sh"
    assert (root / "etc/linked").read_text() == "added\n"
    assert not os.path.lexists(root / "etc/added-link")
    assert os.getxattr(root / "etc/added", "user.note") == b"hi"
    # What was not changed is the base's.
    assert os.readlink(root / "bin/sh") == "busybox"
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    if not pushed:
        assert os.stat(root / "opt/app.sh").st_uid == 1000
        assert os.stat(root / "opt/app.sh").st_gid == 1001


def test_a_layer_on_a_base(mount, plain_registry, run_regfs, tmp_path):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/app")
    result = _cp(m / "demo/hello/v2", m / "layered/app/v1")
    assert result.returncode == 0, result.stderr
    tag = m / "layered/app/v1"
    assert _state(tag).startswith("pushed ")  # the copy itself: a retag
    root = tag / "rootfs"
    assert "rootfs" not in os.listdir(tag)  # unlisted, as in every image directory
    assert (root / "etc/os-release").read_text() == \
        (m / "demo/hello/v2/rootfs/etc/os-release").read_text()
    _edit(root)
    _check(root)
    assert _state(tag) == "pending build"

    offset = plain_registry.log_offset()
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr
    digest = proc.stdout.strip()
    assert _state(tag) == "pushed " + digest
    assert plain_registry.client.manifest("layered/app", "v1")[2] == digest

    base = json.loads(plain_registry.client.manifest("demo/hello", "v2")[0])
    manifest = json.loads(plain_registry.client.manifest("layered/app", "v1")[0])
    assert manifest["layers"][:-1] == base["layers"]
    assert len(manifest["layers"]) == len(base["layers"]) + 1
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    base_config = json.loads(plain_registry.client.blob("demo/hello", base["config"]["digest"]))
    config = json.loads(plain_registry.client.blob("layered/app", manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"][:-1] == base_config["rootfs"]["diff_ids"]
    assert len(config["rootfs"]["diff_ids"]) == len(base_config["rootfs"]["diff_ids"]) + 1
    assert len(config.get("history", [])) == len(base_config.get("history", [])) + 1
    # Only the new layer and the new config were uploaded: the base's layers
    # were mounted from demo/hello.
    sent = urllib.parse.unquote(" ".join(path for _, path in uploads(plain_registry, offset)))
    for layer in base["layers"]:
        assert layer["digest"] not in sent
    assert manifest["layers"][-1]["digest"] in sent

    # The new layer: whiteouts for what was removed, owners as set.
    layer = plain_registry.client.blob("layered/app", manifest["layers"][-1]["digest"])
    listing = subprocess.run(["tar", "-tvz", "--numeric-owner"], input=layer,
                             capture_output=True, check=True).stdout.decode()
    assert "bin/.wh.ls" in listing and "usr/.wh.share" in listing
    assert "etc/apk/" not in listing.replace("etc/.wh.apk", "")
    assert "etc/.wh.apk" in listing
    app_line = next(line for line in listing.splitlines() if line.endswith("opt/app.sh"))
    assert " 1000/1001 " in app_line, app_line

    if has_tool("umoci") and has_tool("skopeo"):
        _check(_unpack(plain_registry, "layered/app:v1", tmp_path), pushed=True)

    # A fresh mount reads the pushed tag's rootfs/ from the registry.
    m2 = mount(plain_registry.host)
    _check(m2 / "layered/app/v1/rootfs")
    assert os.stat(m2 / "layered/app/v1/rootfs/opt/app.sh").st_uid == 1000


def test_rootfs_is_absent_without_a_base(mount, plain_registry, tmp_path):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/none")
    app = tmp_path / "app"
    app.mkdir()
    (app / "file").write_text("x\n")
    assert _cp(app, m / "layered/none/v1").returncode == 0  # a build: no base
    assert not os.path.exists(m / "layered/none/v1/rootfs")
    with pytest.raises(OSError):
        os.mkdir(m / "layered/none/v1/rootfs/x")


def test_edits_are_pushed_before_umount_and_kept_until_then(mount, plain_registry, run_regfs):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/late")
    assert _cp(m / "demo/hello/v1", m / "layered/late/v1").returncode == 0
    (m / "layered/late/v1/rootfs/added").write_text("late\n")
    os.unlink(m / "layered/late/v1/rootfs/README")
    assert _state(m / "layered/late/v1") == "pending build"
    proc = run_regfs("umount", m.path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(plain_registry.client.manifest("layered/late", "v1")[0])
    assert len(manifest["layers"]) == 2
    m2 = mount(plain_registry.host)
    assert (m2 / "layered/late/v1/rootfs/added").read_text() == "late\n"
    assert not os.path.exists(m2 / "layered/late/v1/rootfs/README")
    assert (m2 / "layered/late/v1/rootfs/hello").exists()


def test_edits_and_a_config_edit_go_in_one_push(mount, plain_registry, run_regfs):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/both")
    assert _cp(m / "demo/hello/v1", m / "layered/both/v1").returncode == 0
    tag = m / "layered/both/v1"
    (tag / "rootfs/run.sh").write_text("#!/bin/sh\necho run\n")
    config = json.loads((tag / "config.json").read_text())
    config["config"]["Cmd"] = ["/run.sh"]
    (tag / "config.json").write_text(json.dumps(config))
    assert _state(tag) == "pending build"  # the close of config.json waits for the layer
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(plain_registry.client.manifest("layered/both", "v1")[0])
    pushed = json.loads(plain_registry.client.blob("layered/both", manifest["config"]["digest"]))
    assert pushed["config"]["Cmd"] == ["/run.sh"]
    assert len(pushed["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 2
    assert pushed["history"][-1]["created_by"] == "regfs: changes made in rootfs/"


def test_a_multi_platform_base_gives_the_platforms_image(mount, plain_registry, run_regfs):
    """Changes to a staged copy of a multi-platform tag make the --platform
    image alone, as docker build does FROM a multi-platform base: its
    manifest (not an index) with one layer more, the edited config, and no
    base layer uploaded."""
    m = mount(plain_registry.host, "--push-delay", "600", "--platform", "linux/arm64")
    os.makedirs(m / "layered/multi")
    assert _cp(m / "demo/multi/1", m / "layered/multi/v1").returncode == 0
    tag = m / "layered/multi/v1"
    root = tag / "rootfs"
    assert "ARCH=arm64" in (root / "etc/os-release").read_text()
    (root / "etc/new").write_text("on arm64\n")
    os.unlink(root / "etc/os-release")
    config = json.loads((tag / "config.json").read_text())
    assert config["architecture"] == "arm64"
    config["config"] = dict(config.get("config") or {}, Cmd=["/bin/true"])
    (tag / "config.json").write_text(json.dumps(config))
    assert _state(tag) == "pending build"

    offset = plain_registry.log_offset()
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr
    index = json.loads(plain_registry.client.manifest("demo/multi", "1")[0])
    arm = next(d for d in index["manifests"] if d["platform"]["architecture"] == "arm64")
    base = json.loads(plain_registry.client.manifest("demo/multi", arm["digest"])[0])
    manifest = json.loads(plain_registry.client.manifest("layered/multi", "v1")[0])
    assert "manifests" not in manifest and "config" in manifest
    assert manifest["layers"][:-1] == base["layers"]
    assert len(manifest["layers"]) == len(base["layers"]) + 1
    pushed = json.loads(plain_registry.client.blob("layered/multi", manifest["config"]["digest"]))
    assert pushed["architecture"] == "arm64"
    assert pushed["config"]["Cmd"] == ["/bin/true"]
    assert len(pushed["rootfs"]["diff_ids"]) == len(manifest["layers"])
    sent = urllib.parse.unquote(" ".join(path for _, path in uploads(plain_registry, offset)))
    for layer in base["layers"]:
        assert layer["digest"] not in sent

    m2 = mount(plain_registry.host)
    root2 = m2 / "layered/multi/v1/rootfs"
    assert (root2 / "etc/new").read_text() == "on arm64\n"
    assert not os.path.lexists(root2 / "etc/os-release")


def test_a_config_edit_of_a_multi_platform_tag(mount, plain_registry, run_regfs):
    m = mount(plain_registry.host, "--push-delay", "600", "--platform", "linux/arm64")
    os.makedirs(m / "layered/multicfg")
    assert _cp(m / "demo/multi/1", m / "layered/multicfg/v1").returncode == 0
    tag = m / "layered/multicfg/v1"
    config = json.loads((tag / "config.json").read_text())
    config["config"] = dict(config.get("config") or {}, Env=["MODE=edited"])
    (tag / "config.json").write_text(json.dumps(config))
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(plain_registry.client.manifest("layered/multicfg", "v1")[0])
    assert "config" in manifest, "the arm64 image alone, not the index"
    pushed = json.loads(plain_registry.client.blob("layered/multicfg",
                                                   manifest["config"]["digest"]))
    assert pushed["architecture"] == "arm64" and pushed["config"]["Env"] == ["MODE=edited"]


def test_edits_survive_kill_9_and_the_next_mount_pushes_them(mount, plain_registry, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    m = mount(plain_registry.host, "--push-delay", "600", home=home)
    os.makedirs(m / "layered/killed")
    assert _cp(m / "demo/hello/v1", m / "layered/killed/v1").returncode == 0
    (m / "layered/killed/v1/rootfs/after-crash").write_text("kept\n")
    for pid in daemon_pids(m.path):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    argv = [str(REGFS), "mount", "--cache-dir", str(m.cache_dir), "--push-delay", "600",
            plain_registry.host, str(m.path)]
    proc = subprocess.run(argv, env=isolated_env(home), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    tag = m / "layered/killed/v1"
    assert eventually(lambda: _state(tag).startswith("pushed "), within=30), _state(tag)
    manifest = json.loads(plain_registry.client.manifest("layered/killed", "v1")[0])
    assert len(manifest["layers"]) == 2
    assert (tag / "rootfs/after-crash").read_text() == "kept\n"


def test_a_pushed_tag_edited_again_is_pushed_again_with_one_layer(mount, plain_registry,
                                                                   run_regfs):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/again")
    assert _cp(m / "demo/hello/v1", m / "layered/again/v1").returncode == 0
    tag = m / "layered/again/v1"
    (tag / "rootfs/note").write_text("first\n")
    first = run_regfs("push", tag)
    assert first.returncode == 0, first.stderr
    (tag / "rootfs/note").write_text("second\n")  # an upper file written again
    assert _state(tag) == "pending build"
    second = run_regfs("push", tag)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() != first.stdout.strip()
    manifest = json.loads(plain_registry.client.manifest("layered/again", "v1")[0])
    assert len(manifest["layers"]) == 2
    assert (mount(plain_registry.host) / "layered/again/v1/rootfs/note").read_text() == "second\n"


def test_modes_set_as_acls_and_whiteout_names(mount, plain_registry, run_regfs, tmp_path):
    """cp -a and sed -i set permissions as access ACLs: the mode is what
    rootfs/ and the layer keep. Names starting with .wh. would be whiteouts
    in the layer: refused."""
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub/tool").write_text("#!/bin/sh\n")
    (src / "sub/tool").chmod(0o755)
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/acl")
    assert subprocess.run(["cp", "-r", str(m / "demo/hello/v2"), str(m / "layered/acl/v1")],
                          capture_output=True).returncode == 0
    rootfs = m / "layered/acl/v1/rootfs"
    result = subprocess.run(["cp", "-a", str(src), str(rootfs / "opt")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(rootfs / "opt/sub/tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(rootfs / "opt/sub").st_mode) == 0o755
    before = stat.S_IMODE(os.stat(rootfs / "etc/os-release").st_mode)
    subprocess.run(["sed", "-i", "s/NAME/N/", str(rootfs / "etc/os-release")], check=True)
    assert stat.S_IMODE(os.stat(rootfs / "etc/os-release").st_mode) == before
    for name in (".wh.os-release", ".wh..wh..opq"):
        with pytest.raises(OSError) as e:
            (rootfs / "etc" / name).write_text("x")
        assert e.value.errno == errno.EINVAL, name
    assert (rootfs / "etc/os-release").exists()


def test_hardlinks_in_rootfs_share_their_metadata(mount, plain_registry, run_regfs):
    """A chmod, chown or setfattr of one name of a hardlinked file is every
    name's: what the mount shows is what is pushed (a layer keeps a
    hardlink's metadata once)."""
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/links")
    assert _cp(m / "demo/hello/v2", m / "layered/links/v1").returncode == 0
    tag = m / "layered/links/v1"
    root = tag / "rootfs"
    os.link(root / "usr/bin/su", root / "usr/bin/su2")  # a base file: copied up, then linked
    os.chmod(root / "usr/bin/su2", 0o755)                # the setuid bit goes for both names
    (root / "new.txt").write_text("new\n")
    os.link(root / "new.txt", root / "hard.txt")
    os.chmod(root / "new.txt", 0o4711)
    os.chown(root / "hard.txt", 1234, 5678)
    os.setxattr(root / "new.txt", "user.k", b"v")
    for r in (root,):
        assert stat.S_IMODE(os.stat(r / "usr/bin/su").st_mode) == 0o755
        for name in ("new.txt", "hard.txt"):
            st = os.stat(r / name)
            assert (st.st_uid, st.st_gid) == (1234, 5678), name
            assert os.getxattr(r / name, "user.k") == b"v", name
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr
    m2 = mount(plain_registry.host)
    root2 = m2 / "layered/links/v1/rootfs"
    assert stat.S_IMODE(os.stat(root2 / "usr/bin/su").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root2 / "usr/bin/su2").st_mode) == 0o755
    for name in ("new.txt", "hard.txt"):
        st = os.stat(root2 / name)
        assert (st.st_uid, st.st_gid) == (1234, 5678), name
        assert os.getxattr(root2 / name, "user.k") == b"v", name


def test_mknod_in_rootfs_makes_a_fifo_and_a_device(mount, plain_registry, run_regfs):
    m = mount(plain_registry.host, "--push-delay", "600")
    os.makedirs(m / "layered/nodes")
    result = _cp(m / "demo/hello/v2", m / "layered/nodes/v1")
    assert result.returncode == 0, result.stderr
    root = m / "layered/nodes/v1/rootfs"
    os.mkfifo(root / "pipe", 0o600)
    os.link(root / "pipe", root / "pipe2")
    os.chmod(root / "pipe2", 0o606)  # one inode, one mode: both names'
    assert stat.S_IMODE(os.lstat(root / "pipe").st_mode) == 0o606
    os.mknod(root / "etc/tty0", 0o620 | stat.S_IFCHR, os.makedev(4, 0))
    os.chmod(root / "etc/tty0", 0o620)  # past the umask
    assert os.lstat(root / "etc/tty0").st_rdev == os.makedev(4, 0)
    proc = run_regfs("push", m / "layered/nodes/v1")
    assert proc.returncode == 0, proc.stderr
    fresh = mount(plain_registry.host) / "layered/nodes/v1/rootfs"
    st = os.lstat(fresh / "pipe")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o606
    assert os.lstat(fresh / "pipe2").st_ino == st.st_ino and st.st_nlink == 2
    st = os.lstat(fresh / "etc/tty0")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(4, 0)
    assert stat.S_IMODE(st.st_mode) == 0o620
    assert (fresh / "etc/os-release").read_text() == \
        (m / "demo/hello/v2/rootfs/etc/os-release").read_text()
    # A device of the base changed: copied up with its device number.
    m2 = mount(plain_registry.host, "--push-delay", "600")
    result = _cp(m2 / "layered/nodes/v1", m2 / "layered/nodes/v2")
    assert result.returncode == 0, result.stderr
    os.chmod(m2 / "layered/nodes/v2/rootfs/etc/tty0", 0o600)
    proc = run_regfs("push", m2 / "layered/nodes/v2")
    assert proc.returncode == 0, proc.stderr
    st = os.lstat(mount(plain_registry.host) / "layered/nodes/v2/rootfs/etc/tty0")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(4, 0)
    assert stat.S_IMODE(st.st_mode) == 0o600
