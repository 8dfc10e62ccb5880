"""SPEC §2: catalogs and tag lists of more than one page are complete."""

import os

from harness import MANY_TAGS, PAGED_REPOS, seedlib


def test_catalog_of_many_pages_is_complete(mount, paged_registry):
    m = mount(paged_registry.host)
    repos = sorted({r for r, _, _ in seedlib.SAMPLES} | set(PAGED_REPOS))
    assert len(repos) > 2 * 2  # several pages of maxentries=2
    assert set(os.listdir(m.path)) == {r.split("/")[0] for r in repos}
    assert sorted(os.listdir(m / "paged")) == sorted(r.split("/")[1] for r in PAGED_REPOS)
    assert sorted(os.listdir(m / "demo")) == sorted(
        {r.split("/")[1] for r in repos if r.startswith("demo/")})
    assert os.listdir(m / "paged/r4") == ["v1"]


def test_tag_list_of_many_pages_is_complete(mount, tag_front):
    m = mount(tag_front.host)
    before = len(tag_front.tag_pages)
    assert sorted(os.listdir(m / "demo/many")) == MANY_TAGS
    pages = [p for p in tag_front.tag_pages[before:] if p[0] == "demo/many"]
    assert len(pages) > 1, "regfs did not follow the Link header"
    assert (m / "demo/many/t06/manifest.json").is_file()
