"""A tiny HTTP front for a registry that paginates tag lists.

docker-registry 2.8 answers `/v2/<name>/tags/list` with every tag at once, so
to test that regfs follows `Link: <...>; rel="next"` pages, this front slices
the list by `n` (default: page_size) and `last` and adds the Link header, as
Docker Hub and others do. Every other request passes through unchanged:
method, headers (Host too, so the registry's Location URLs name the front),
bodies streamed both ways, status and headers of the answer (WWW-Authenticate
and Location included). Threaded; records what it served for assertions.
"""

import http.client
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "te", "trailers", "transfer-encoding", "upgrade"}
TAGS_LIST = re.compile(r"^/v2/(.+)/tags/list$")
CHUNK = 1 << 16


def _chunks_from(rfile):
    """Decodes a chunked request body from rfile."""
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return
        yield rfile.read(size)
        rfile.readline()


def _counted(rfile, length):
    while length > 0:
        data = rfile.read(min(CHUNK, length))
        if not data:
            return
        length -= len(data)
        yield data


class TagPager:
    """Serves on 127.0.0.1:port (a free one by default) in front of upstream
    ('http://127.0.0.1:5000' or https)."""

    def __init__(self, upstream, page_size=2, port=0):
        url = urlsplit(upstream)
        self.upstream_https = url.scheme == "https"
        self.upstream_netloc = url.netloc
        self.page_size = page_size
        self.lock = threading.Lock()
        self.tag_pages = []  # (name, last, n) of each tags/list answer given
        self.requests = []  # (method, path) of every request
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def _connect(self):
        if self.upstream_https:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.upstream_netloc, timeout=60, context=ctx)
        return http.client.HTTPConnection(self.upstream_netloc, timeout=60)

    def _handler(self):
        pager = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def _forward(self):
                with pager.lock:
                    pager.requests.append((self.command, self.path))
                url = urlsplit(self.path)
                match = TAGS_LIST.match(url.path)
                if self.command == "GET" and match:
                    self._tags_page(match.group(1), parse_qs(url.query))
                    return
                self._proxy(self.path)

            def _request_body(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return _chunks_from(self.rfile), True
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    return _counted(self.rfile, length), False
                return None, False

            def _upstream(self, path):
                body, chunked = self._request_body()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP or
                           (chunked and k.lower() == "transfer-encoding")}
                conn = pager._connect()
                conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
                if body is not None:
                    for data in body:
                        if chunked:
                            conn.send(b"%x\r\n%s\r\n" % (len(data), data))
                        else:
                            conn.send(data)
                    if chunked:
                        conn.send(b"0\r\n\r\n")
                return conn, conn.getresponse()

            def _proxy(self, path):
                conn, resp = self._upstream(path)
                try:
                    self.send_response_only(resp.status, resp.reason)
                    length = resp.getheader("Content-Length")
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP_BY_HOP:
                            self.send_header(k, v)
                    no_body = self.command == "HEAD" or resp.status in (204, 304) \
                        or 100 <= resp.status < 200
                    if length is None and not no_body:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if no_body:
                        return
                    while True:
                        data = resp.read(CHUNK)
                        if not data:
                            break
                        self.wfile.write(data)
                finally:
                    conn.close()

            def _tags_page(self, name, query):
                # The upstream gets the request without n/last: it lists all.
                conn, resp = self._upstream(f"/v2/{name}/tags/list")
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

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        return Handler
