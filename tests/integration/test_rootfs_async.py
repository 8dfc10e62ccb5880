"""Issue 17 item 3: the merge of rootfs/ runs off the FUSE threads.

A FaultFront between regfs and a real docker-registry sends blob bodies at
RATE bytes/s, so that fetching the layers of big/layers (LAYERS layers of
LAYER_MIB MiB of random bytes each) takes longer than the mount's
--request-timeout. Then `ls rootfs` fails with ETIMEDOUT within the deadline
while the merge goes on in the background, and a later `ls` gets its result
without fetching anything again; two `ls rootfs` at once share one merge
(each layer blob is fetched once); `regfs status` shows each layer's
progress meanwhile; and the rest of the mount answers at once.
"""

import errno
import json
import os
import threading
import time

import pytest

from fault_front import FaultFront
from harness import eventually, reglib, start_registry
from regfs_scripts import mkimage

TIMEOUT = 2  # --request-timeout of the mounts under test
LAYERS = 3
LAYER_MIB = 4
RATE = 1 << 20  # bytes/s of each blob transfer through the front
FAST = 1.0  # what needs no merge answers within this
MERGED = 60  # the merge is over within this (about LAYER_MIB s)
REPO = "big/layers"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    layouts = tmp_path_factory.mktemp("async-layouts")
    r = start_registry(tmp_path_factory, layouts, "rootfs-async",
                       samples=[("public/hello", "v1", "hello")])
    layers = [{"random_mib": LAYER_MIB, "seed": 17 + k, "path": f"layer{k}.bin",
               "compression": "gzip", "entries": [{"path": f"etc/from-{k}", "content": f"{k}\n"}]}
              for k in range(LAYERS)]
    layout = layouts / "big"
    mkimage.build(str(layout), "v1", {"format": "oci", "layers": layers})
    mkimage.push(str(layout), "v1", f"{r.host}/{REPO}:v1")
    yield r
    reglib.stop(r.dir)


@pytest.fixture
def front(registry):
    f = FaultFront(registry.url).start()
    yield f
    f.stop()


def slow_mount(mount, front):
    front.add("throttle", path=r"/blobs/sha256:", rate=RATE)
    return mount(front.host, "--request-timeout", TIMEOUT)


def layer_digests(m):
    with open(m / REPO / "v1/manifest.json") as f:
        return [layer["digest"] for layer in json.load(f)["layers"]]


def blob_gets(front, digest):
    return sum(1 for _, method, path, _ in front.log if method == "GET" and path.endswith(digest))


def try_listdir(path):
    start = time.monotonic()
    try:
        result = sorted(os.listdir(path))
    except OSError as e:
        result = e.errno
    return result, time.monotonic() - start


def merges(m):
    with open(m / ".regfs/status") as f:
        return json.load(f).get("merges", [])


def expected_rootfs():
    return sorted(["etc"] + [f"layer{k}.bin" for k in range(LAYERS)])


def test_ls_rootfs_times_out_while_merging_then_gets_the_merge(mount, front, run_regfs):
    m = slow_mount(mount, front)
    digests = layer_digests(m)
    rootfs = m / REPO / "v1/rootfs"
    result, took = try_listdir(rootfs)
    assert result == errno.ETIMEDOUT, f"ls rootfs gave {result} after {took:.1f} s"
    assert took < TIMEOUT + FAST

    # The merge goes on, each layer's progress in the status (bytes count
    # by whole 2 MiB chunks stored).
    running = merges(m)
    assert len(running) == 1 and running[0]["image"].startswith(f"{front.host}/{REPO}@sha256:")
    layers = running[0]["layers"]
    assert [layer["digest"] for layer in layers] == digests
    assert all(layer["size"] > LAYER_MIB << 20 for layer in layers)
    assert all(layer["state"] == "fetching" for layer in layers), layers

    def partly_fetched():
        return any(layer["state"] == "fetching" and 0 < layer["fetched"] < layer["size"]
                   for merge in merges(m) for layer in merge["layers"])

    assert eventually(partly_fetched, within=LAYER_MIB), merges(m)
    human = run_regfs("status", m.path)
    assert human.returncode == 0, human.stderr
    assert "rootfs merges:" in human.stdout and f"{REPO}@sha256:" in human.stdout
    assert "entries" in human.stdout and "fetching" in human.stdout

    # The rest of the mount answers meanwhile.
    for path in (m / "public/hello/v1", m / REPO / "v1", m / "public/hello"):
        result, took = try_listdir(path)
        assert isinstance(result, list) and took < FAST, (path, result, took)
    with open(m / "public/hello/v1/manifest.json", "rb") as f:
        assert f.read()

    # A later ls gets the merge, and nothing was fetched twice.
    assert eventually(lambda: try_listdir(rootfs)[0] == expected_rootfs(), within=MERGED)
    result, took = try_listdir(rootfs)
    assert result == expected_rootfs() and took < FAST
    with open(rootfs / "etc/from-2") as f:
        assert f.read() == "2\n"
    for digest in digests:
        assert blob_gets(front, digest) == 1, (digest, front.log)
    assert merges(m) == []


def test_concurrent_ls_of_one_image_share_one_merge(mount, front):
    m = slow_mount(mount, front)
    digests = layer_digests(m)
    rootfs = m / REPO / "v1/rootfs"
    results = []

    def ls_until_merged():
        deadline = time.monotonic() + MERGED
        while time.monotonic() < deadline:
            result, _ = try_listdir(rootfs)
            if result != errno.ETIMEDOUT:
                break
        results.append(result)

    threads = [threading.Thread(target=ls_until_merged) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected_rootfs()] * 2
    for digest in digests:
        assert blob_gets(front, digest) == 1, (digest, front.log)
    assert len(merges(m)) == 0
