"""Issue 19: pushes succeed against registries as they really answer.

A FaultFront in front of a real docker-registry changes one thing at a time,
as ECR, quay, pulp or GCR-like setups do: other success codes (PATCH 201 or
204, PUT 200/202/204, without Location or Docker-Content-Digest), answers
lost after the registry did the work (on a kept-alive and on a fresh
connection), PATCH refused with 405, upload steps redirected (307/308, to
the same host and to another one), bearer tokens expiring every 2 s during
a slow upload; and limits that refuse a push before any upload. Each push
ends with the registry holding the exact digest and `cp` exiting 0, or with
the documented errno and reason.
"""

import base64
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from fault_front import FaultFront
from harness import reglib, start_registry
from regfs_scripts import mkimage

TIMEOUT = 5  # -o request_timeout (seconds)
CHUNK = "5M"  # --upload-chunk-size: the 12 MiB layer goes in 3 parts
BLOB_UPLOADS = r"/blobs/uploads/"


@pytest.fixture(scope="module")
def upload_registry(tmp_path_factory):
    layouts = tmp_path_factory.mktemp("upload-layouts")
    r = start_registry(tmp_path_factory, layouts, "upload-faults", samples=[])
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="module")
def large_layout(tmp_path_factory):
    """An image whose layer is 12 MiB (chunked) beside a small config."""
    path = tmp_path_factory.mktemp("large") / "layout"
    descriptor = mkimage.build(str(path), "x", mkimage.preset("large", large_mib=12))
    return path, descriptor["digest"]


def front_mount(mount, registry, **front_args):
    front = FaultFront(registry.url, **front_args).start()
    m = mount(front.host, "--upload-chunk-size", CHUNK, "-o", f"request_timeout={TIMEOUT}")
    return front, m


def cp_r(src, dst):
    return subprocess.run(["cp", "-r", str(src), str(dst)], capture_output=True, text=True,
                          timeout=300)


def layout_blobs(layout):
    return {"sha256:" + p.name: p.read_bytes() for p in (Path(layout) / "blobs/sha256").iterdir()}


def assert_pushed(registry, repo, tag, layout, digest):
    """The registry holds repo:tag as exactly the layout's image."""
    _, _, got = registry.client.manifest(repo, tag)
    assert got == digest
    blobs = layout_blobs(layout)
    reachable = registry.client.reachable(repo, tag)
    assert {d for d, _, _, _ in reachable} == set(blobs)
    for d, _, _, data in reachable:
        assert (data if data is not None else registry.client.blob(repo, d)) == blobs[d], d


def push(m, layout, repo, tag):
    os.makedirs(m / repo, exist_ok=True)
    return cp_r(layout, m / repo / tag)


def log_text(m):
    try:
        return (Path(m.cache_dir) / "regfs.log").read_text(errors="replace")
    except OSError:
        return ""


def requests(front, method, path=BLOB_UPLOADS, kind="any"):
    return [p for _, mth, p, k in front.log
            if mth == method and path in p and (kind == "any" or k == kind)]


# 1. Any 2xx the distribution spec's clients accept is success.
REWRITES = {
    # ECR answers a chunk with 201.
    "patch-201": [dict(methods=("PATCH",), path=BLOB_UPLOADS, status=201)],
    "patch-204": [dict(methods=("PATCH",), path=BLOB_UPLOADS, status=204)],
    # Blob PUT answered 200/204, without the digest and location headers.
    "blob-put-200-bare": [dict(methods=("PUT",), path=BLOB_UPLOADS, status=200,
                               drop_headers=("Location", "Docker-Content-Digest"))],
    "blob-put-204": [dict(methods=("PUT",), path=BLOB_UPLOADS, status=204,
                          drop_headers=("Location", "Docker-Content-Digest"))],
    "blob-put-202": [dict(methods=("PUT",), path=BLOB_UPLOADS, status=202)],
    # Manifest PUT answered 202, 200 or 204 (and without headers).
    "manifest-202": [dict(methods=("PUT",), path=r"/manifests/", status=202)],
    "manifest-200-bare": [dict(methods=("PUT",), path=r"/manifests/", status=200,
                               drop_headers=("Location", "Docker-Content-Digest"))],
    "manifest-204": [dict(methods=("PUT",), path=r"/manifests/", status=204)],
}


@pytest.mark.parametrize("case", sorted(REWRITES))
def test_success_codes_registries_answer(case, mount, upload_registry, large_layout):
    layout, digest = large_layout
    front, m = front_mount(mount, upload_registry)
    try:
        for fault in REWRITES[case]:
            front.add("rewrite", **fault)
        repo = f"codes/{case}"
        result = push(m, layout, repo, "v1")
        assert result.returncode == 0, result.stderr + log_text(m)[-2000:]
        assert front.served("rewrite"), "the fault never matched"
        assert_pushed(upload_registry, repo, "v1", layout, digest)
        # Nothing was sent twice: each step's answer was taken as success.
        assert len(requests(front, "PATCH")) == 3
        assert len(requests(front, "PUT", r"/manifests/")) == 1
    finally:
        front.stop()


# 2. A lost answer is not a failed push.
LOST = {
    "second-chunk": dict(methods=("PATCH",), path=BLOB_UPLOADS, skip=1),
    "closing-put": dict(methods=("PUT",), path=r"/blobs/uploads/.*digest=", skip=None,
                        large=True),
    "monolithic-put": dict(methods=("PUT",), path=r"/blobs/uploads/.*digest=", skip=None,
                           large=False),
    "manifest-put": dict(methods=("PUT",), path=r"/manifests/v1$", skip=None),
}


def arm_drop(front, layout, manifest, spec, connection):
    """Arms one "drop" fault for the step `spec` names."""
    path = spec["path"]
    if "large" in spec:
        blobs = layout_blobs(layout)
        by_size = sorted((d for d in blobs if d != manifest), key=lambda d: len(blobs[d]))
        target = by_size[-1] if spec["large"] else by_size[0]
        path = path + target.replace(":", "(:|%3A)")
    if spec["skip"]:  # let the first ones through
        front.add("rewrite", methods=spec["methods"], path=path, status=None,
                  times=spec["skip"])
    return front.add("drop", methods=spec["methods"], path=path, connection=connection, times=1)


@pytest.mark.parametrize("connection", ["reused", "fresh"])
@pytest.mark.parametrize("step", sorted(LOST))
def test_lost_answer_is_not_a_failed_push(step, connection, mount, upload_registry,
                                          large_layout):
    layout, digest = large_layout
    front, m = front_mount(mount, upload_registry, keep_alive=(connection == "reused"))
    try:
        fault = arm_drop(front, layout, digest, LOST[step], connection)
        repo = f"lost/{step}-{connection}"
        result = push(m, layout, repo, "v1")
        assert result.returncode == 0, result.stderr + log_text(m)[-3000:]
        assert fault.hits == 1, "the answer was never dropped"
        assert_pushed(upload_registry, repo, "v1", layout, digest)
        assert "necessary data rewind" not in log_text(m)
        if connection == "fresh":
            # regfs asked where the registry stood (HEAD of the blob or the
            # manifest, GET of the session) and sent nothing twice.
            at = next(i for i, (_, _, _, k) in enumerate(front.log) if k == "drop")
            _, method, path, _ = front.log[at]
            after = front.log[at + 1:]
            assert any(mth in ("HEAD", "GET") and repo in p for _, mth, p, _ in after)
            assert (method, path) not in [(mth, p) for _, mth, p, _ in after]
    finally:
        front.stop()


# 3. Fallbacks.
def test_refused_chunks_go_in_one_put_remembered(mount, upload_registry, large_layout):
    layout, digest = large_layout
    front, m = front_mount(mount, upload_registry)
    try:
        front.add("status", methods=("PATCH",), path=BLOB_UPLOADS, status=405,
                  body=b'{"errors":[{"code":"UNSUPPORTED","message":"chunked uploads off"}]}')
        result = push(m, layout, "nochunks/a", "v1")
        assert result.returncode == 0, result.stderr + log_text(m)[-2000:]
        assert_pushed(upload_registry, "nochunks/a", "v1", layout, digest)
        assert len(requests(front, "PATCH")) == 1  # refused once
        # The registry's habit is remembered: the next push sends no PATCH.
        before = len(front.log)
        result = push(m, layout, "nochunks/b", "v1")
        assert result.returncode == 0, result.stderr
        assert_pushed(upload_registry, "nochunks/b", "v1", layout, digest)
        later = [p for _, mth, p, _ in front.log[before:] if mth == "PATCH"]
        assert later == []
        assert "refuses them (HTTP 405)" in log_text(m)
    finally:
        front.stop()


def test_chunk_size_is_configurable(mount, upload_registry, large_layout):
    layout, digest = large_layout
    front = FaultFront(upload_registry.url).start()
    try:
        m = mount(front.host, "-o", "upload_chunk_size=6M")
        result = push(m, layout, "chunks/six", "v1")
        assert result.returncode == 0, result.stderr
        assert_pushed(upload_registry, "chunks/six", "v1", layout, digest)
        sizes = [int(h["Content-Length"]) for (_, mth, p, _), h in zip(front.log, front.headers)
                 if mth == "PATCH"]
        blobs = layout_blobs(layout)
        large = max(len(b) for b in blobs.values())
        assert sizes == [6 << 20, 6 << 20, large - (12 << 20)]
    finally:
        front.stop()


def _auth_file(path, host, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


@pytest.mark.parametrize("status", [307, 308])
def test_redirected_upload_steps(status, mount, basic_registry, large_layout, tmp_path):
    """A redirect to the registry's own host keeps the credentials; one to
    another host (a presigned upload URL: that host adds its own) gets
    none."""
    layout, digest = large_layout
    basic = "Basic " + base64.b64encode(
        f"{basic_registry.user}:{basic_registry.password}".encode()).decode()
    front = FaultFront(basic_registry.url).start()
    other = FaultFront(basic_registry.url, bind="127.0.0.2", inject_auth=basic).start()
    try:
        auth = _auth_file(tmp_path / "auth.json", front.host, basic_registry.user,
                          basic_registry.password)
        m = mount(front.host, "--auth-file", auth, "--upload-chunk-size", CHUNK)
        same_repo, other_repo = f"redirect/same{status}", f"redirect/other{status}"
        # Same host: the first chunk and the blob PUTs come back to the front.
        front.add("redirect", methods=("PATCH", "PUT"), path=BLOB_UPLOADS, status=status,
                  location=front.url, times=3)
        result = push(m, layout, same_repo, "v1")
        assert result.returncode == 0, result.stderr + log_text(m)[-2000:]
        assert len(front.served("redirect")) == 3
        same = [h for (_, mth, p, k), h in zip(front.log, front.headers)
                if mth in ("PATCH", "PUT") and k is None and BLOB_UPLOADS in p]
        assert same and all(h.get("Authorization") == basic for h in same)
        assert_pushed(basic_registry, same_repo, "v1", layout, digest)
        # Another host: every step from the redirect on goes there, without
        # the registry's credentials.
        front.clear()
        front.add("redirect", methods=("PATCH", "PUT"), path=BLOB_UPLOADS, status=status,
                  location=other.url)
        result = push(m, layout, other_repo, "v1")
        assert result.returncode == 0, result.stderr + log_text(m)[-2000:]
        assert front.served("redirect")
        assert any(mth == "PATCH" for _, mth, _, _ in other.log)
        assert all("Authorization" not in h for h in other.headers), other.headers
        assert_pushed(basic_registry, other_repo, "v1", layout, digest)
    finally:
        front.stop()
        other.stop()


def test_tokens_expiring_every_2s_during_a_slow_upload(mount, token_registry, large_layout,
                                                       tmp_path):
    layout, digest = large_layout
    front = FaultFront(token_registry.url).start()
    try:
        front.token_lifetime = 2.0
        auth = _auth_file(tmp_path / "auth.json", front.host, token_registry.user,
                          token_registry.password)
        m = mount(front.host, "--auth-file", auth, "--upload-chunk-size", CHUNK)
        os.makedirs(m / "private/slow")
        # 12 MiB at 2 MiB/s: about 6 s of upload, three token lifetimes.
        front.add("throttle_upload", methods=("PATCH", "PUT"), path=BLOB_UPLOADS,
                  rate=2 << 20)
        result = push(m, layout, "private/slow", "v1")
        assert result.returncode == 0, result.stderr + log_text(m)[-2000:]
        assert len(front.revoked) >= 2, "tokens did not expire during the upload"
        used = {h.get("Authorization") for h in front.headers if h.get("Authorization")}
        assert len(used) >= 3
        token_registry.client.manifest("private/slow", "v1")
        assert_pushed(token_registry, "private/slow", "v1", layout, digest)
    finally:
        front.stop()


# 4. Limits say themselves; a registry that truly refuses gives the
# documented errno, never ENOENT.
def test_manifest_over_4_mib_is_refused_before_any_upload(mount, upload_registry, tmp_path):
    front, m = front_mount(mount, upload_registry)
    try:
        layout = tmp_path / "big-manifest"
        mkimage.build(str(layout), "v1",
                      {"layers": [{"entries": [{"path": "a", "content": "a\n"}]}],
                       "annotations": {"pad": "x" * (4 << 20)}})
        result = push(m, layout, "limits/big", "v1")
        assert result.returncode != 0
        assert "Invalid argument" in result.stderr, result.stderr
        error = os.getxattr(m / "limits/big/v1", "user.regfs.error").decode()
        assert "up to 4 MiB" in error, error
        assert not requests(front, "POST") and not requests(front, "PUT", "/")
    finally:
        front.stop()


def test_too_long_names_say_the_limit(mount, upload_registry):
    front, m = front_mount(mount, upload_registry)
    try:
        os.mkdir(m / "limits")
        with pytest.raises(OSError) as info:
            os.mkdir(m / "limits" / ("t" * 129))
        assert info.value.errno == errno.EINVAL
        assert "a tag has at most 128 characters; this one has 129" in log_text(m)
        # mkdir -p of nested names makes namespaces of tags, up to the
        # repository name's 255 characters.
        deep = m / "limits" / ("r" * 120) / ("s" * 120) / ("u" * 120)
        os.makedirs(deep)  # limits/rrr.../sss... (248 characters), tag uuu...
        with pytest.raises(OSError) as info:
            os.mkdir(deep / "v1")
        assert info.value.errno == errno.EINVAL
        assert "a repository name has at most 255 characters; this one has 369" in log_text(m)
    finally:
        front.stop()


def test_a_lost_session_fails_with_eio_not_enoent(mount, upload_registry, large_layout):
    layout, _ = large_layout
    front, m = front_mount(mount, upload_registry)
    try:
        front.add("status", methods=("PATCH",), path=BLOB_UPLOADS, status=404,
                  body=b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN",'
                       b'"message":"blob upload unknown to registry"}]}')
        result = push(m, layout, "lost/session", "v1")
        assert result.returncode != 0
        assert "Input/output error" in result.stderr, result.stderr
        assert "No such file" not in result.stderr
        error = os.getxattr(m / "lost/session/v1", "user.regfs.error").decode()
        assert "blob upload unknown to registry" in error, error
        status, _, _ = upload_registry.client.request("/v2/lost/session/manifests/v1",
                                                      method="HEAD")
        assert status == 404
    finally:
        front.stop()


def test_a_push_that_cannot_get_further_ends(mount, upload_registry, large_layout):
    """Chunks answered 204 without a Location: every session loses its place
    after its first part. Fresh sessions get no further, so the push ends
    with EIO instead of starting over forever."""
    layout, _ = large_layout
    front, m = front_mount(mount, upload_registry)
    try:
        front.add("rewrite", methods=("PATCH",), path=BLOB_UPLOADS, status=204,
                  drop_headers=("Location", "Range"))
        result = push(m, layout, "stuck/upload", "v1")
        assert result.returncode != 0
        assert "Input/output error" in result.stderr, result.stderr
        sessions = [p for _, method, p, _ in front.log
                    if method == "POST" and "mount=" not in p and "/blobs/uploads/" in p]
        assert 2 <= len(sessions) <= 12, sessions
        assert "pushing" not in os.getxattr(m / "stuck/upload/v1", "user.regfs.state").decode()
    finally:
        front.stop()
