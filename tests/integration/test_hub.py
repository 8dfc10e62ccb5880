"""SPEC §2, §4, §7 on a registry set up like Docker Hub (scripts/registry
--auth hub): no catalog for anyone, 401 alike for private and missing
repositories, library/* public, each user pushing only under their own
namespace. The everyday flow through a real mount: login, browse by name,
push to a new repository (with and without mkdir -p), retag, a
cross-repository copy from library/, a denied push kept and retried after
the right login, invalid names, a registry that refuses HEAD, and the
multi-registry tree."""

import errno
import json
import os
import subprocess
import sys
import urllib.parse

import pytest

from fault_front import FaultFront
from harness import ROOT, REGFS, eventually, isolated_env, seedlib, start_registry, reglib

MKIMAGE = ROOT / "scripts" / "mkimage"


@pytest.fixture(scope="session")
def hub(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "hub", auth="hub",
                       samples=seedlib.HUB_SAMPLES)
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub-layout") / "hello"
    subprocess.run([sys.executable, str(MKIMAGE), "--out", str(out), "--tag", "v1",
                    "--preset", "hello"], check=True, capture_output=True, timeout=300)
    return out


def _layout_digest(layout):
    return json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"]


def _login(home, registry, user):
    proc = subprocess.run([str(REGFS), "login", registry.host, "-u", user, "--password-stdin"],
                          env=isolated_env(home), input=f"{user}-secret\n", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return home


def _home(tmp_path, name):
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    return home


def _cp_r(src, dst):
    return subprocess.run(["cp", "-r", str(src), str(dst)], capture_output=True, text=True,
                          timeout=300)


def _errno(path):
    try:
        os.stat(path)
    except OSError as e:
        return e.errno
    return 0


def _remote_digest(registry, repo, tag):
    return registry.client.manifest(repo, tag)[2]


def _state(path):
    return os.getxattr(path, "user.regfs.state").decode()


def _log(m):
    return (m.cache_dir / "regfs.log").read_text()


def _uploads(registry, offset):
    return [(m, p) for m, p in registry.requests_since(offset)
            if "/blobs/uploads/" in p and "mount=" not in p and m in ("POST", "PATCH", "PUT")]


def test_registry_is_set_up_like_docker_hub(hub):
    from regclient import RegistryClient, HTTPStatus
    carol = RegistryClient(hub.url, "carol", "carol-secret")
    with pytest.raises(HTTPStatus) as e:
        carol.catalog()
    assert e.value.status == 401
    assert carol.tags("carol/tools") == ["v1"]
    assert hub.anonymous.tags("library/hello") == ["latest"]
    # Private and missing answer alike.
    for repo in ("dave/private", "dave/nosuch"):
        status = carol.request(f"/v2/{repo}/tags/list")[0]
        assert status == 401, repo


def test_browse_official_images_anonymously(mount, hub):
    m = mount(hub.host)
    assert "latest" in os.listdir(m / "library/hello")
    assert (m / "library/hello/latest/manifest.json").read_bytes() == \
        hub.anonymous.manifest("library/hello", "latest")[0]
    assert "hello" in os.listdir(m / "library")  # used, so known
    assert "library" in os.listdir(m.path)
    # Nothing invented: below a name no answer proves, nothing exists, and
    # under a repository a name that is not a tag does not either.
    assert _errno(m / "nosuch/v1") == errno.ENOENT
    assert _errno(m / "library/hello/nosuch") == errno.ENOENT
    # library/ is proven (it leads to library/hello): a new name may stand
    # under it, as a repository to be, but nothing below that.
    assert _errno(m / "library/nosuch/v1") == errno.ENOENT
    # A private repository answers 401 as a missing one does: ENOENT, not
    # EACCES, and the log says why once, with docker's hint.
    assert _errno(m / "dave/private") == errno.ENOENT
    assert _errno(m / "dave/private/v1") == errno.ENOENT
    log = _log(m)
    assert log.count("No repository " + hub.host + "/dave/private ") == 1, log
    assert "regfs login " + hub.host in log
    # Listing a name that stands unproven is no error either.
    assert os.listdir(m / "dave") == []


def test_login_push_retag_and_copy_from_library(mount, hub, layout, tmp_path):
    home = _login(_home(tmp_path, "carol"), hub, "carol")
    m = mount(hub.host, home=home)
    # The account's namespace is named by the credentials: listed at once.
    assert "carol" in os.listdir(m.path)
    assert os.listdir(m / "carol") == []  # nothing listed yet, and no error
    assert "tools" not in os.listdir(m / "carol")
    assert "v1" in os.listdir(m / "carol/tools")
    assert "tools" in os.listdir(m / "carol")

    # A new repository: mkdir -p, then cp -r of a layout.
    os.makedirs(m / "carol/newapp", exist_ok=True)
    result = _cp_r(layout, m / "carol/newapp/1.0")
    assert result.returncode == 0, result.stderr
    want = _layout_digest(layout)
    assert _remote_digest(hub, "carol/newapp", "1.0") == want
    assert _state(m / "carol/newapp/1.0") == "pushed " + want
    assert sorted(os.listdir(m / "carol/newapp/1.0")) == \
        sorted(os.listdir(layout))
    assert "newapp" in os.listdir(m / "carol")

    # And straight into a new repository of a known namespace.
    result = _cp_r(layout, m / "carol/straight/v1")
    assert result.returncode == 0, result.stderr
    assert _remote_digest(hub, "carol/straight", "v1") == want

    # A retag moves no blob: only the manifest is sent.
    offset = hub.log_offset()
    result = _cp_r(m / "carol/newapp/1.0", m / "carol/newapp/1.1")
    assert result.returncode == 0, result.stderr
    assert _remote_digest(hub, "carol/newapp", "1.1") == want
    assert _uploads(hub, offset) == []

    # From library/: the blobs are mounted across repositories, not re-sent.
    offset = hub.log_offset()
    result = _cp_r(m / "library/alpine-like/3", m / "carol/newapp/latest")
    assert result.returncode == 0, result.stderr
    assert _remote_digest(hub, "carol/newapp", "latest") == hub.digest("library/alpine-like:3")
    assert _uploads(hub, offset) == []
    mounts = [p for _, p in hub.requests_since(offset) if "mount=" in p]
    assert mounts and all("from=library%2Falpine-like" in p for p in mounts), mounts
    assert {"1.0", "1.1", "latest"} <= set(os.listdir(m / "carol/newapp"))


def test_denied_push_is_kept_and_retried_after_login(mount, hub, layout, tmp_path, run_regfs):
    home = _login(_home(tmp_path, "carol"), hub, "carol")
    m = mount(hub.host, home=home)
    os.makedirs(m / "dave/fromcarol", exist_ok=True)
    result = _cp_r(layout, m / "dave/fromcarol/v1")
    assert result.returncode != 0
    assert "Permission denied" in result.stderr, result.stderr
    tag = m / "dave/fromcarol/v1"
    state = _state(tag)
    assert state.startswith("error: denied: requested access to the resource is denied"), state
    assert "user carol" in state
    assert "carol-secret" not in state
    assert (tag / "index.json").read_bytes() == (layout / "index.json").read_bytes()
    status = run_regfs("status", m.path)
    assert "dave/fromcarol:v1  error: denied" in status.stdout, status.stdout
    with pytest.raises(Exception):
        _remote_digest(hub, "dave/fromcarol", "v1")
    # `regfs login` as dave while mounted: the next touch retries with it.
    _login(home, hub, "dave")
    want = _layout_digest(layout)

    def retried():
        subprocess.run(["touch", str(tag / "index.json")], capture_output=True, timeout=60)
        return _state(tag) == "pushed " + want

    assert eventually(retried, within=10), _state(tag)
    assert _remote_digest(hub, "dave/fromcarol", "v1") == want


def test_a_user_who_pulls_everything_sees_no_invented_names(mount, hub, layout, tmp_path):
    """A name that is neither a proven repository nor a known namespace does
    not exist, so cp -r makes it instead of copying into it."""
    reader = mount(hub.host, home=_login(_home(tmp_path, "reader"), hub, "reader"))
    assert _errno(reader / "nosuch/v1") == errno.ENOENT
    assert "v1" in os.listdir(reader / "dave/private")  # reader may pull it
    admin = mount(hub.host, home=_login(_home(tmp_path, "admin"), hub, "admin"))
    os.makedirs(admin / "newrepo", exist_ok=True)
    result = _cp_r(layout, admin / "newrepo/v1")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(admin / "newrepo/v1")) == \
        sorted(os.listdir(layout))
    assert _remote_digest(hub, "newrepo", "v1") == _layout_digest(layout)


def test_invalid_names_are_refused_with_a_message(mount, hub, layout, tmp_path):
    m = mount(hub.host, home=_login(_home(tmp_path, "carol"), hub, "carol"))
    # MyApp would be a valid tag, but carol is no repository: as a
    # repository name it is refused, never staged as a tag nothing pushes.
    for bad in ("carol/MyApp", "carol/MyApp/v1"):
        with pytest.raises(OSError) as e:
            os.makedirs(m / bad)
        assert e.value.errno == errno.EINVAL, bad
    assert "\"MyApp\" in carol: not a valid repository name" in _log(m)
    result = _cp_r(layout, m / "carol/Newthing")
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result.stderr
    for bad in ("carol/app/.hidden", "UPPER", "carol/bad name"):
        with pytest.raises(OSError) as e:
            os.makedirs(m / bad)
        assert e.value.errno == errno.EINVAL, bad


def test_switching_accounts_invents_nothing(mount, hub, tmp_path):
    """A repository this account may not read is not turned into a directory
    of invented names, and a `regfs login` while mounted shows it at once."""
    home = _login(_home(tmp_path, "carol"), hub, "carol")
    m = mount(hub.host, home=home)
    assert os.listdir(m / "carol/tools") == ["v1"]
    m.unmount()
    _login(home, hub, "dave")
    argv = [str(REGFS), "mount", "--cache-dir", str(m.cache_dir), hub.host, str(m.path)]
    subprocess.run(argv, env=isolated_env(home), check=True, capture_output=True, timeout=60)
    assert "tools" in os.listdir(m / "carol")  # known from before
    for name in ("carol/tools/v1", "carol/tools/zzz", "carol/tools/v1/rootfs"):
        assert _errno(m / name) == errno.ENOENT, name
    _login(home, hub, "carol")
    assert eventually(lambda: os.listdir(m / "carol/tools") == ["v1"], within=10)
    assert (m / "carol/tools/v1/manifest.json").read_bytes() == \
        hub.client.manifest("carol/tools", "v1")[0]
    assert "rootfs" not in os.listdir(m / "carol/tools/v1")
    assert os.listdir(m / "carol/tools/v1/rootfs")


def test_unpushed_tags_are_named_at_unmount(mount, hub, layout, tmp_path):
    m = mount(hub.host, home=_login(_home(tmp_path, "carol"), hub, "carol"))
    os.makedirs(m / "carol/half/v1")
    (m / "carol/half/v1/oci-layout").write_bytes((layout / "oci-layout").read_bytes())
    assert _state(m / "carol/half/v1") == "incomplete: no index.json or manifest.json"
    m.unmount()
    log = _log(m)
    assert "Staged tag " + hub.host + "/carol/half:v1 is not pushed (incomplete" in log, log


def test_registry_refusing_head(mount, hub, layout, tmp_path):
    """HEAD answered 405: manifests are read with GET, blob existence with a
    one-byte ranged GET, and HEAD is not tried again."""
    front = FaultFront(hub.url).start()
    front.add("status", status=405, methods=("HEAD",))
    try:
        home = _home(tmp_path, "carol")
        subprocess.run([str(REGFS), "login", front.host, "-u", "carol", "--password-stdin"],
                       env=isolated_env(home), input="carol-secret\n", text=True, check=True,
                       capture_output=True, timeout=60)
        m = mount(front.host, home=home)
        assert (m / "library/hello/latest/manifest.json").read_bytes() == \
            hub.anonymous.manifest("library/hello", "latest")[0]
        assert (m / "carol/tools/v1/config.json").read_bytes()
        os.makedirs(m / "carol/headless", exist_ok=True)
        result = _cp_r(layout, m / "carol/headless/v1")
        assert result.returncode == 0, result.stderr
        assert _remote_digest(hub, "carol/headless", "v1") == _layout_digest(layout)
        heads = [p for _, method, p, _ in front.log if method == "HEAD"]
        assert len([p for p in heads if "/manifests/" in p]) == 1, heads
        # Blobs are checked in parallel: a few HEADs at once, then none.
        assert 1 <= len([p for p in heads if "/blobs/" in p]) <= 4, heads
        seen = len(front.log)
        result = _cp_r(m / "carol/headless/v1", m / "carol/headless/v2")
        assert result.returncode == 0, result.stderr
        assert _remote_digest(hub, "carol/headless", "v2") == _layout_digest(layout)
        assert [p for _, method, p, _ in front.log[seen:] if method == "HEAD"] == []
        ranged = [p for _, method, p, _ in front.log[seen:] if method == "GET" and "/blobs/" in p]
        assert ranged, "blob existence is asked with a ranged GET"
        assert "refuses HEAD" in _log(m)
    finally:
        front.stop()


def test_multi_registry_mode(mount, hub, layout, tmp_path):
    m = mount(None, home=_login(_home(tmp_path, "carol"), hub, "carol"))
    root = m / hub.host
    assert hub.host in os.listdir(m.path)
    assert "carol" in os.listdir(root)
    result = _cp_r(layout, root / "carol/multi/v1")
    assert result.returncode == 0, result.stderr
    assert _remote_digest(hub, "carol/multi", "v1") == _layout_digest(layout)
    assert (root / "library/hello/latest/manifest.json").read_bytes() == \
        hub.anonymous.manifest("library/hello", "latest")[0]
    assert _errno(root / "nosuch/v1") == errno.ENOENT


def test_builds_layers_and_lazy_reads_on_a_hub_like_registry(mount, hub, tmp_path, run_regfs):
    """This session's behaviour where names are not listed and a missing one
    answers 401: a plain directory built as eStargz and pushed by `regfs
    push`, read back lazily (ranged GETs under a bearer token) by a fresh
    mount; a layer on a library/ base with hardlinked names sharing one
    mode; a name that is not UTF-8 refused before anything is staged."""
    home = _login(_home(tmp_path, "carol"), hub, "carol")
    m = mount(hub.host, "--push-delay", "600", "--layer-compression", "estargz", home=home)
    app = tmp_path / "app"
    (app / "bin").mkdir(parents=True)
    (app / "bin/run").write_text("#!/bin/sh\necho run\n")
    (app / "data.bin").write_bytes(os.urandom(3 << 20))
    os.makedirs(m / "carol/lazyapp", exist_ok=True)
    assert _cp_r(app, m / "carol/lazyapp/v1").returncode == 0
    with pytest.raises(OSError) as raised:
        open(os.fsencode(str(m / "carol/lazyapp/v1")) + b"/bad\xffname", "w").close()
    assert raised.value.errno == errno.EINVAL
    proc = run_regfs("push", m / "carol/lazyapp/v1")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(hub.client.manifest("carol/lazyapp", "v1")[0])
    layer = manifest["layers"][0]
    assert "containerd.io/snapshot/stargz/toc.digest" in layer.get("annotations", {})

    m2 = mount(hub.host, home=home)
    offset = hub.log_offset()
    root = m2 / "carol/lazyapp/v1/rootfs"
    assert (root / "bin/run").read_text() == "#!/bin/sh\necho run\n"
    assert (root / "data.bin").read_bytes() == (app / "data.bin").read_bytes()
    assert {"bin", "data.bin"} <= set(os.listdir(root))
    assert any(layer["digest"] in p for _, p in hub.requests_since(offset))

    # A layer on library/'s base: base layers mounted, not sent; a hardlink's
    # chmod is every name's, in the mount and in what is pushed.
    assert _cp_r(m / "library/alpine-like/3", m / "carol/layered/v1").returncode == 0
    tag = m / "carol/layered/v1"
    os.link(tag / "rootfs/usr/bin/su", tag / "rootfs/usr/bin/su2")
    os.chmod(tag / "rootfs/usr/bin/su2", 0o755)
    assert os.stat(tag / "rootfs/usr/bin/su").st_mode & 0o7777 == 0o755
    offset = hub.log_offset()
    proc = run_regfs("push", tag)
    assert proc.returncode == 0, proc.stderr
    base = json.loads(hub.client.manifest("library/alpine-like", "3")[0])
    sent = urllib.parse.unquote(" ".join(p for _, p in _uploads(hub, offset)))
    assert not any(d["digest"] in sent for d in base["layers"])
    m3 = mount(hub.host, home=home)
    for name in ("su", "su2"):
        assert os.stat(m3 / "carol/layered/v1/rootfs/usr/bin" / name).st_mode & 0o7777 == 0o755


def test_a_lazy_build_reads_with_the_registry_down_after_a_remount(mount, hub, tmp_path,
                                                                   run_regfs):
    """Session 6 on the Docker Hub-like registry: `cp -a` of files with modes
    of their own and default ones (the state journal; defaults unrecorded),
    built as eStargz; a fresh mount reads a page of it by chunks under a
    bearer token, then, remounted on the same cache with the registry gone,
    reads the same bytes from the kept table and chunks."""
    front = FaultFront(hub.url).start()
    try:
        home = _home(tmp_path, "carol")
        subprocess.run([str(REGFS), "login", front.host, "-u", "carol", "--password-stdin"],
                       env=isolated_env(home), input="carol-secret\n", text=True, check=True,
                       capture_output=True, timeout=60)
        app = tmp_path / "app"
        (app / "bin").mkdir(parents=True)
        for i in range(200):
            (app / f"bin/tool{i}").write_text(f"#!/bin/sh\necho {i}\n")
            os.chmod(app / f"bin/tool{i}", 0o755 if i % 2 else 0o644)
        data = os.urandom(6 << 20)
        (app / "data.bin").write_bytes(data)
        m = mount(front.host, "--push-delay", "600", "--layer-compression", "estargz",
                  home=home)
        os.makedirs(m / "carol/offline", exist_ok=True)
        proc = subprocess.run(["cp", "-a", str(app), str(m / "carol/offline/v1")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        proc = run_regfs("push", m / "carol/offline/v1")
        assert proc.returncode == 0, proc.stderr

        m2 = mount(front.host, "-o", "request_timeout=5", home=home)
        root = m2 / "carol/offline/v1/rootfs"
        with open(root / "data.bin", "rb") as f:
            assert os.pread(f.fileno(), 4096, 3 << 20) == data[3 << 20:(3 << 20) + 4096]
        for i in (0, 1):
            assert os.stat(root / f"bin/tool{i}").st_mode & 0o7777 == (0o755 if i else 0o644)
        assert (root / "bin/tool1").read_text() == "#!/bin/sh\necho 1\n"
        m2.unmount()
    finally:
        front.stop()
    proc = subprocess.run(m2.argv, env=m2.env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    try:
        assert proc.returncode == 0, proc.stderr
        with open(root / "data.bin", "rb") as f:
            assert os.pread(f.fileno(), 4096, 3 << 20) == data[3 << 20:(3 << 20) + 4096]
        assert (root / "bin/tool1").read_text() == "#!/bin/sh\necho 1\n"
        with pytest.raises(OSError) as raised:  # never read: needs the registry
            (root / "bin/tool2").read_text()
        assert raised.value.errno in (errno.EIO, errno.ETIMEDOUT)
    finally:
        m2.unmount()
