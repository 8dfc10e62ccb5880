"""Issue 18: the clients that push are made by the same rules as those that
read (fs/content.h client_options). A push through a mount honours
--request-timeout (-o request_timeout), and a registry that registries.conf
calls insecure is pushed to over plain HTTP, as it is read."""

import os
import subprocess
import time

import pytest

from fault_front import FaultFront
from harness import reglib, start_registry
from regfs_scripts import mkimage

NON_LOOPBACK = "192.0.2.2"  # this machine's non-loopback address (see test_hostile.py)
TIMEOUT = 2  # -o request_timeout (seconds)


@pytest.fixture(scope="module")
def push_registry(tmp_path_factory):
    layouts = tmp_path_factory.mktemp("push-clients-layouts")
    r = start_registry(tmp_path_factory, layouts, "push-clients", samples=[])
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="module")
def small_layout(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "layout"
    descriptor = mkimage.build(str(path), "x", mkimage.preset("hello"))
    return path, descriptor["digest"]


def push(layout, dest):
    """cp -r of `layout` to the new tag directory `dest`."""
    os.makedirs(dest.parent, exist_ok=True)
    return subprocess.run(["cp", "-r", str(layout), str(dest)], capture_output=True, text=True,
                          timeout=300)


def test_a_push_honours_request_timeout(mount, push_registry, small_layout):
    """Every blob HEAD of the push hangs. Each attempt gives up after
    request_timeout (2 s), not the client's default 30 s, so the push fails
    in seconds, where it took minutes when pushes ignored the option."""
    layout, _ = small_layout
    front = FaultFront(push_registry.url).start()
    try:
        m = mount(front.host, "-o", f"request_timeout={TIMEOUT}")
        front.add("hang", methods=("HEAD",), path=r"/blobs/sha256:")
        start = time.monotonic()
        result = push(layout, m / "hanging/heads/v1")
        elapsed = time.monotonic() - start
        assert result.returncode != 0, result.stderr
        assert ("Input/output error" in result.stderr or "timed out" in result.stderr), \
            result.stderr
        # An attempt gives up after 2 s (then the registry counts as down and
        # the rest fails at once); the client's default alone is 30 s.
        assert elapsed < 20, elapsed
        assert front.served("hang")
    finally:
        front.stop()


def test_an_insecure_registry_in_registries_conf_is_pushed_over_http(mount, tmp_path,
                                                                    push_registry,
                                                                    small_layout):
    """A plain-HTTP registry on a non-loopback address (no fall-back to HTTP
    for it unless it is insecure), named insecure only in registries.conf,
    in a mount of all registries: read and pushed over HTTP."""
    layout, digest = small_layout
    front = FaultFront(push_registry.url, bind=NON_LOOPBACK).start()
    try:
        home = tmp_path / "home"
        conf = home / ".config/containers/registries.conf"
        conf.parent.mkdir(parents=True)
        conf.write_text(f"""
[[registry]]
location = "{front.host}"
insecure = true
""")
        m = mount(None, home=home)
        result = push(layout, m / front.host / "conf/insecure/v1")
        assert result.returncode == 0, result.stderr
        _, _, got = push_registry.client.manifest("conf/insecure", "v1")
        assert got == digest
        # Pushed through the front (plain HTTP); the tag lists over it too.
        assert any(method == "PUT" for _, method, _, _ in front.log)
        assert "v1" in os.listdir(m / front.host / "conf/insecure")
    finally:
        front.stop()
