"""SPEC §1: mount(8) and /etc/fstab. `mount -t fuse.regfs` runs mount.fuse3,
which runs `regfs SOURCE MOUNTPOINT -o OPTS` (adding rw,dev,suid) through
/bin/sh with the default PATH (mount(8) drops the caller's PATH). So the test
runs in a private mount namespace whose /usr/local/sbin holds a `regfs`
symlink to the build, and reads there with nsenter."""

import os
import shutil
import subprocess
import time

import pytest

from harness import REGFS, daemon_pids, isolated_env, require_regfs

BIN = "/usr/local/sbin"  # on the default PATH of /bin/sh


@pytest.fixture
def namespace_mount(tmp_path):
    """mount_in(*mount_args) runs mount(8) in a fresh private namespace;
    returns (CompletedProcess, daemon pid or None). Unmounts afterwards."""
    for tool in ("unshare", "nsenter", "mount.fuse3"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing")
    if not os.path.isdir(BIN):
        pytest.skip(f"{BIN} is missing")
    require_regfs()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "regfs").symlink_to(REGFS)
    home = tmp_path / "home"
    home.mkdir()
    daemons = []

    def mount_in(mountpoint, *args):
        script = f'mount --bind "{bin_dir}" {BIN} || exit 99; exec mount "$@"'
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                               "sh", *map(str, args)], env=isolated_env(home),
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        if proc.returncode == 99:
            pytest.skip(f"cannot bind-mount over {BIN}")
        pids = daemon_pids(mountpoint)
        daemons.extend((pid, mountpoint) for pid in pids)
        return proc, (pids[0] if pids else None)

    yield mount_in
    for pid, mp in daemons:
        subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "fusermount3", "-u", "-z",
                        str(mp)], capture_output=True)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, 9)


def _in(pid, *argv):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *map(str, argv)],
                          capture_output=True, text=True, timeout=60)


def _mount_line(pid, mp):
    with open(f"/proc/{pid}/mounts") as f:
        return next((line for line in f if line.split(" ")[1] == str(mp)), "")


def _assert_serves(pid, mp, registry, prefix=""):
    assert pid, "no regfs daemon serves the mount point"
    cat = _in(pid, "cat", mp / prefix / "demo/hello/v1/manifest.json")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.encode() == registry.anonymous.manifest("demo/hello", "v1")[0]


def test_mount_t_fuse_regfs(namespace_mount, tmp_path, plain_registry):
    mp, cache = tmp_path / "mnt", tmp_path / "cache"
    mp.mkdir()
    proc, pid = namespace_mount(mp, "-t", "fuse.regfs", plain_registry.host, mp, "-o",
                                f"cache_dir={cache},cache_size=20G,allow_other")
    assert proc.returncode == 0, proc.stderr
    _assert_serves(pid, mp, plain_registry)
    line = _mount_line(pid, mp)
    assert " fuse.regfs " in line and "allow_other" in line and "default_permissions" in line
    log = (cache / "regfs.log").read_text()
    assert "allow_other" in log and "private images" in log and "warning" in log


def test_fstab_line(namespace_mount, tmp_path, plain_registry):
    mp, cache = tmp_path / "mnt", tmp_path / "cache"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# regfs\n"
        f"{plain_registry.host}  {mp}  fuse.regfs  defaults,noauto,nofail,_netdev,"
        f"x-systemd.automount,cache_dir={cache},cache_size=1G,tag_ttl=60,ro,noexec  0 0\n")
    proc, pid = namespace_mount(mp, "-T", fstab, mp)
    assert proc.returncode == 0, proc.stderr
    _assert_serves(pid, mp, plain_registry)
    assert (cache / "regfs.log").exists()
    assert "cache_dir=" not in _mount_line(pid, mp)  # our options are not mount options


def test_fstab_every_registry(namespace_mount, tmp_path, plain_registry):
    """Source "regfs": the multi-registry tree."""
    mp, cache = tmp_path / "mnt", tmp_path / "cache"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"regfs {mp} fuse.regfs noauto,cache_dir={cache} 0 0\n")
    proc, pid = namespace_mount(mp, "-T", fstab, mp)
    assert proc.returncode == 0, proc.stderr
    _assert_serves(pid, mp, plain_registry, prefix=plain_registry.host)


def test_bad_option_fails_the_mount(namespace_mount, tmp_path, plain_registry):
    mp = tmp_path / "mnt"
    mp.mkdir()
    proc, pid = namespace_mount(mp, "-t", "fuse.regfs", plain_registry.host, mp, "-o",
                                "cache_size=lots")
    assert proc.returncode != 0 and pid is None
    assert "cache_size" in proc.stderr or "size" in proc.stderr, proc.stderr
