"""Fixtures of the integration tests: real docker-registry processes on
loopback in each auth/transport mode, seeded with images made by
scripts/mkimage, a tag-paginating front, and real regfs mounts.

Session fixtures (one registry each, started once, seeded with
regfs_scripts.seed.SAMPLES; `.pushed` maps "repo:tag" to its descriptor):
  plain_registry   no auth, HTTP; also demo/many with MANY_TAGS tags
  basic_registry   htpasswd Basic (users alice, bob; .auth_file has alice)
  token_registry   bearer tokens: anonymous pulls public/*, alice pulls all
  tls_registry     HTTPS with a test CA (.ca_cert), no auth
  paged_registry   catalog maxentries=2, with PAGED_REPOS extra repositories
  tag_front        TagPager in front of plain_registry (2 tags a page)
Mounts:
  mount            factory: mount(REGISTRY or None, *OPTIONS, home=, env=)
                   -> Mount; every mount is unmounted after the test
  plain_mount      a module-wide single-registry mount of plain_registry
  run_regfs        runs build/regfs ARGS -> CompletedProcess (and unmounts
                   whatever it mounted)
"""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (MANY_TAGS, PAGED_REPOS, Mount, Mounter, isolated_env,  # noqa: E402
                     reglib, require_regfs, REGFS, seedlib, start_registry)
from tag_pager import TagPager  # noqa: E402


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    return tmp_path_factory.mktemp("layouts")


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory, layouts):
    samples = seedlib.SAMPLES + [("demo/many", t, "hello") for t in MANY_TAGS]
    r = start_registry(tmp_path_factory, layouts, "plain", samples=samples)
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "basic", auth="basic")
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "token", auth="token")
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory, layouts):
    r = start_registry(tmp_path_factory, layouts, "tls", tls=True)
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="session")
def paged_registry(tmp_path_factory, layouts):
    samples = seedlib.SAMPLES + [(repo, "v1", "hello") for repo in PAGED_REPOS]
    r = start_registry(tmp_path_factory, layouts, "paged", samples=samples, maxentries=2)
    yield r
    reglib.stop(r.dir)


@pytest.fixture(scope="session")
def tag_front(plain_registry):
    front = TagPager(plain_registry.url, page_size=2).start()
    yield front
    front.stop()


@pytest.fixture
def mount(tmp_path):
    mounter = Mounter(tmp_path / "mounts")
    yield mounter.mount
    mounter.close()


@pytest.fixture(scope="module")
def plain_mount(tmp_path_factory, plain_registry):
    mounter = Mounter(tmp_path_factory.mktemp("plain-mount"))
    yield mounter.mount(plain_registry.host)
    mounter.close()


@pytest.fixture
def run_regfs(tmp_path):
    started = []

    def run(*args, timeout=60):
        require_regfs()
        home = tmp_path / "run-home"
        home.mkdir(exist_ok=True)
        env = isolated_env(home)
        argv = [str(REGFS), *map(str, args)]
        for a in args:
            if Path(str(a)).is_dir():
                started.append(Mount(a, tmp_path, argv, env))
        return subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    yield run
    for m in started:
        m.unmount()
