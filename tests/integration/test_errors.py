"""SPEC §7: ENOENT for missing names, EROFS for writes, clear CLI errors.
The mount stays up through all of them."""

import errno
import os
import subprocess

import pytest

from harness import is_mounted
from regfs_scripts import free_port

MISSING_DIGEST = "sha256:" + "0" * 64


def test_missing_names_are_enoent(plain_mount):
    m = plain_mount
    with pytest.raises(FileNotFoundError):
        os.listdir(m / "demo/no-such-repo")
    with pytest.raises(FileNotFoundError):
        os.listdir(m / "no-such-namespace/app")
    with pytest.raises(FileNotFoundError):
        os.stat(m / "demo/hello/no-such-tag")
    with pytest.raises(FileNotFoundError):
        os.stat(m / "demo/hello" / MISSING_DIGEST)
    with pytest.raises(FileNotFoundError):
        os.stat(m / "demo/hello/v1/no-such-file")
    with pytest.raises(FileNotFoundError):
        os.stat(m / "demo/hello/v1/blobs/sha256" / MISSING_DIGEST[7:])
    with pytest.raises(FileNotFoundError):
        os.stat(m / "demo/hello/v1/blobs/sha512")
    assert (m / "demo/hello/v1/manifest.json").read_bytes()


def _erofs(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == errno.EROFS, info.value


def test_remote_content_is_read_only(plain_mount):
    d = plain_mount / "demo/hello/v1"
    blob = d / "blobs/sha256" / os.listdir(d / "blobs/sha256")[0]
    _erofs(open, d / "manifest.json", "w")
    _erofs(open, d / "manifest.json", "a")
    _erofs(open, blob, "r+b")
    _erofs(open, d / "new-file", "w")
    _erofs(os.mkdir, d / "new-dir")
    _erofs(os.mkdir, d / "blobs/sha256/new-dir")
    _erofs(os.unlink, d / "manifest.json")
    _erofs(os.unlink, blob)
    _erofs(os.truncate, d / "config.json", 0)
    _erofs(os.rename, d / "config.json", d / "config2.json")
    _erofs(os.rmdir, d)
    _erofs(os.symlink, "manifest.json", d / "link")
    proc = subprocess.run(["rm", "-rf", str(d)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Read-only file system" in proc.stderr
    assert sorted(os.listdir(d)) == sorted(
        ["oci-layout", "index.json", "manifest.json", "config.json", "blobs"])
    assert (d / "manifest.json").read_bytes()


def _one_line_error(proc):
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_arguments_give_one_line(run_regfs, tmp_path, plain_registry):
    mp = tmp_path / "mp"
    mp.mkdir()
    _one_line_error(run_regfs("mount", "--no-such-option", plain_registry.host, mp))
    _one_line_error(run_regfs("mount", "--cache-size", "lots", plain_registry.host, mp))
    _one_line_error(run_regfs("mount", "--tag-ttl", "-5", plain_registry.host, mp))
    _one_line_error(run_regfs("mount", "not a registry!", mp))
    _one_line_error(run_regfs("mount", plain_registry.host, tmp_path / "no-such-dir"))
    _one_line_error(run_regfs("no-such-command"))
    assert not is_mounted(mp)


def test_unreachable_registry_gives_one_line(run_regfs, tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    host = f"127.0.0.1:{free_port()}"
    line = _one_line_error(run_regfs("mount", host, mp, timeout=180))
    assert host in line
    assert not is_mounted(mp)


def test_version_and_help(run_regfs):
    version = run_regfs("--version")
    assert version.returncode == 0 and version.stdout.strip()
    for args in (["--help"], ["mount", "--help"]):
        proc = run_regfs(*args)
        assert proc.returncode == 0
        assert "mount" in proc.stdout


def test_mount_over_a_live_mount_is_refused(mount, plain_registry):
    """A second `regfs mount` on a mount point regfs serves fails with a
    message, rather than stacking a second daemon over the first."""
    m = mount(plain_registry.host)
    for point in (m.path, str(m.path) + "/"):
        proc = subprocess.run([*m.argv[:-1], point], env=m.env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode != 0
        assert "regfs is mounted there already" in proc.stderr, proc.stderr
    with open("/proc/self/mountinfo") as f:
        assert sum(f" {m.path} " in line for line in f) == 1
    assert (m / "demo/hello/v1/manifest.json").read_bytes()
