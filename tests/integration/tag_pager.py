"""A tiny HTTP front for a registry that paginates tag lists.

docker-registry 2.8 answers `/v2/<name>/tags/list` with every tag at once, so
to test that regfs follows `Link: <...>; rel="next"` pages, this front slices
the list by `n` (default: page_size) and `last` and adds the Link header, as
Docker Hub and others do. Every other request passes through unchanged, by
the proxy of fault_front.FaultFront (which this is, with no faults armed):
method, headers (Host too, so the registry's Location URLs name the front),
bodies streamed both ways, status and headers of the answer (WWW-Authenticate
and Location included). Threaded; records what it served for assertions.
"""

import json
import re
from urllib.parse import parse_qs, quote, urlsplit

from fault_front import HOP_BY_HOP, FaultFront

TAGS_LIST = re.compile(r"^/v2/(.+)/tags/list$")


class TagPager(FaultFront):
    """Serves on 127.0.0.1:port (a free one by default) in front of upstream
    ('http://127.0.0.1:5000' or https)."""

    def __init__(self, upstream, page_size=2, port=0):
        self.page_size = page_size
        self.tag_pages = []  # (name, last, n) of each tags/list answer given
        super().__init__(upstream, port=port)

    def _handler(self):
        pager = self

        class Handler(super()._handler()):
            def _pass_through(self):
                url = urlsplit(self.path)
                match = TAGS_LIST.match(url.path)
                if self.command == "GET" and match:
                    self._tags_page(match.group(1), parse_qs(url.query))
                    return
                super()._pass_through()

            def _tags_page(self, name, query):
                # The upstream gets the request without n/last: it lists all.
                conn, resp = self._upstream(path=f"/v2/{name}/tags/list")
                try:
                    body = resp.read()
                    headers = [(k, v) for k, v in resp.getheaders()
                               if k.lower() not in HOP_BY_HOP | {"content-length", "link"}]
                    status, reason = resp.status, resp.reason
                finally:
                    conn.close()
                if status == 200:
                    listing = json.loads(body)
                    tags = sorted(listing.get("tags") or [])
                    last = query.get("last", [None])[0]
                    n = int(query.get("n", [pager.page_size])[0])
                    if last is not None:
                        tags = [t for t in tags if t > last]
                    page, rest = tags[:n], tags[n:]
                    with pager.lock:
                        pager.tag_pages.append((name, last, n))
                    if rest and page:
                        link = f"/v2/{name}/tags/list?n={n}&last={quote(page[-1])}"
                        headers.append(("Link", f'<{link}>; rel="next"'))
                    body = json.dumps({"name": listing.get("name", name),
                                       "tags": page}).encode()
                self.send_response_only(status, reason)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
