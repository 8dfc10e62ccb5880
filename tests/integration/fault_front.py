"""A fault-injecting HTTP front for a real registry, and a header recorder.

FaultFront listens on 127.0.0.1 (plain HTTP) and passes every request through
to the upstream registry (method, headers with Host, bodies both ways, status
and headers of the answer) unless a fault armed by the test matches it:

  front.add("hang", path=r"/blobs/")       never answer (until release())
  front.add("reset", times=2)              close the connection with a RST
  front.add("status", status=503, headers={"Retry-After": "1"}, times=2)
  front.add("truncate", keep=1000)         send the headers and `keep` bytes
                                           of the body, then reset
  front.add("corrupt", at=10)              flip the body byte at `at`
  front.add("throttle", rate=1 << 20)      send the body at `rate` bytes/s
  front.add("throttle_upload", methods=("PATCH", "PUT"), rate=1 << 18)
                                           read the *request* body at `rate`
                                           bytes/s (a slow upload); a body
                                           cut short (the client died) is
                                           not passed on: both sides reset
  front.add("redirect", location=URL)      answer 307 to URL + the path
  front.add("revoke_token", keep=N)        after N body bytes, revoke the
                                           request's bearer token and reset;
                                           a revoked token gets the
                                           registry's own 401 challenge
  front.add("rewrite", status=201, drop_headers=("Location",))
                                           pass the request on, answer with
                                           the registry's answer under
                                           another status (no body for 204)
                                           and without those headers
  front.add("drop", connection="reused")   pass the request on, let the
                                           registry do it, then close the
                                           connection without an answer;
                                           connection= "reused" or "fresh"
                                           matches only a request that is
                                           not / is the first on its
                                           connection (None: any)

  front.add("delay", seconds=1.5)          wait, then pass the request on

The registry itself can go away (issue 16) and come back:

  front.refuse()      close the port (connections are refused) and reset
                      every open connection
  front.accept()      listen on the same port again
  front.go_down(how)  how = "refuse", "hang" (connections accepted, nothing
                      answered) or "reset" (every request reset); go_up()
                      undoes it (hanging requests are reset)
  front.flap(period=2.0, how="refuse")   down and up every `period` seconds
                      on a thread of its own, until stop_flapping() (which
                      leaves it up); front.transitions counts the changes
  front.drop_connections()   reset every open connection (a throttled
                      transfer in flight ends)

FaultFront(..., keep_alive=False) closes the connection after every answer
(so every request comes on a fresh one); front.token_lifetime = 2.0 makes
every bearer token expire 2 s after the front first saw it (then treated as
revoked); inject_auth="Basic ..." sends that Authorization upstream for
requests that carry none (a host that takes presigned upload URLs).

The upstream may be http:// or https:// (its certificate is not checked).
With tls=(cert, key) the front serves HTTPS; realm=(old, new) rewrites the
registry's WWW-Authenticate challenges (to point regfs at another token
endpoint). Subclasses change what a request without a fault gets by
extending the handler's _pass_through (tag_pager.TagPager pages tag lists).

A fault matches a request whose method is in `methods` (default GET and
HEAD) and whose path matches the regex `path` (default any), `times` times
(None: until clear()), after letting the first `skip` of them (default 0)
pass through. Requests that match nothing are proxied. Everything
served is recorded: front.log is [(time, method, path, fault kind or None)],
front.headers the request headers of each. Threaded; the control API is
called from the test's thread.

HeaderRecorder is a second tiny server (another host for redirects): it
records the headers of every request and answers 200 with the bytes a test
gave for the path.
"""

import http.client
import re
import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "te", "trailers", "transfer-encoding", "upgrade"}
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


class Fault:
    def __init__(self, kind, path=None, methods=("GET", "HEAD"), times=None, **params):
        self.kind = kind
        self.path = re.compile(path) if path else None
        self.methods = tuple(methods)
        self.times = times
        self.params = params
        self.hits = 0
        self.skipped = 0

    def matches(self, method, path, reused=False):
        if method not in self.methods:
            return False
        connection = self.params.get("connection")
        if connection is not None and (connection == "reused") != reused:
            return False
        if self.path and not self.path.search(path):
            return False
        return self.times is None or self.hits < self.times


def _reset(sock):
    """Closes sock so that the peer sees a connection reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # resets and closed peers are what these tests do


class _Served:
    """A threaded server on bind:port (a free one by default) with the
    handler class of self._handler(), run in a daemon thread once started."""

    def __init__(self, bind, port=0, tls=None):
        self.server = _Server((bind, port), self._handler())
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.host = f"{bind}:{self.server.server_address[1]}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


ALL_METHODS = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE")


class FaultFront(_Served):
    def __init__(self, upstream, port=0, bind="127.0.0.1", tls=None, realm=None,
                 keep_alive=True, inject_auth=None):
        self.bind = bind
        self.tls = tls
        self.connections = set()
        self.refusing = False
        self.down_faults = []
        self.transitions = 0
        self._flapper = None
        self._flap_stop = threading.Event()
        url = urlsplit(upstream)
        self.realm = realm
        self.keep_alive = keep_alive
        self.inject_auth = inject_auth
        self.token_lifetime = None
        self.token_seen = {}
        self.upstream_https = url.scheme == "https"
        self.upstream_netloc = url.netloc
        self.lock = threading.Lock()
        self.faults = []
        self.log = []
        self.headers = []
        self.revoked = set()
        self.released = threading.Event()
        super().__init__(bind, port, tls)

    def stop(self):
        self.stop_flapping()
        self.release()
        if not self.refusing:
            super().stop()
        self.drop_connections()

    def drop_connections(self):
        """Resets every open client connection."""
        with self.lock:
            connections = list(self.connections)
        for sock in connections:
            # A handler thread holds the socket (its rfile): close() alone
            # would not end the connection.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            _reset(sock)

    def refuse(self):
        """Closes the port: new connections are refused, open ones reset."""
        with self.lock:
            if self.refusing:
                return
            self.refusing = True
        self.server.shutdown()
        self.server.server_close()
        self.drop_connections()

    def accept(self):
        """Listens on the same port again after refuse()."""
        with self.lock:
            if not self.refusing:
                return
        port = int(self.host.rsplit(":", 1)[1])
        deadline = time.monotonic() + 10
        while True:
            try:
                server = _Server((self.bind, port), self._handler())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        with self.lock:
            self.refusing = False

    def go_down(self, how="refuse"):
        """The registry stops answering: "refuse", "hang" or "reset"."""
        with self.lock:
            self.transitions += 1
        if how == "refuse":
            self.refuse()
            return
        self.released.clear()
        self.down_faults.append(self.add(how, methods=ALL_METHODS, timeout=3600))
        # Insert first: it wins over any other fault.
        with self.lock:
            self.faults.insert(0, self.faults.pop())

    def go_up(self):
        with self.lock:
            self.transitions += 1
            self.faults = [f for f in self.faults if f not in self.down_faults]
        self.down_faults = []
        self.release()
        self.accept()

    def flap(self, period=2.0, how="refuse"):
        """Down for `period` s, up for `period` s, ... until stop_flapping()."""
        self._flap_stop.clear()

        def run():
            while not self._flap_stop.is_set():
                self.go_down(how)
                if self._flap_stop.wait(period):
                    break
                self.go_up()
                self._flap_stop.wait(period)
            self.go_up()

        self._flapper = threading.Thread(target=run, daemon=True)
        self._flapper.start()

    def stop_flapping(self):
        if self._flapper:
            self._flap_stop.set()
            self._flapper.join(30)
            self._flapper = None

    def add(self, kind, **kw):
        fault = Fault(kind, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self):
        """Disarms every fault and lets hanging requests go (they are closed)."""
        with self.lock:
            self.faults = []
        self.release()

    def release(self):
        self.released.set()

    def served(self, kind=None, path=None):
        """Requests served with fault `kind` (None: passed through) whose path
        matches `path`: [(time, method, path)]."""
        with self.lock:
            return [(t, m, p) for t, m, p, k in self.log
                    if k == kind and (path is None or re.search(path, p))]

    def _connect(self):
        if self.upstream_https:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.upstream_netloc, timeout=60, context=ctx)
        return http.client.HTTPConnection(self.upstream_netloc, timeout=60)

    def _take(self, method, path, reused=False):
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path, reused):
                    if fault.skipped < fault.params.get("skip", 0):
                        fault.skipped += 1
                        return None
                    fault.hits += 1
                    return fault
        return None

    def _handler(self):
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def setup(self):
                super().setup()
                with front.lock:
                    front.connections.add(self.connection)

            def finish(self):
                with front.lock:
                    front.connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _dispatch(self):
                reused = getattr(self, "_answered", 0) > 0
                self._answered = getattr(self, "_answered", 0) + 1
                if not front.keep_alive:
                    self.close_connection = True
                fault = front._take(self.command, self.path, reused)
                auth = self.headers.get("Authorization", "")
                now = time.monotonic()
                with front.lock:
                    front.log.append((now, self.command, self.path,
                                      fault.kind if fault else None))
                    front.headers.append(dict(self.headers.items()))
                    revoked = auth in front.revoked
                    if auth.startswith("Bearer ") and front.token_lifetime is not None:
                        seen = front.token_seen.setdefault(auth, now)
                        if now - seen > front.token_lifetime:
                            front.revoked.add(auth)
                            revoked = True
                if revoked:
                    self._proxy(strip_auth=True)
                    return
                if fault is None:
                    self._pass_through()
                    return
                getattr(self, "_fault_" + fault.kind)(fault)

            def _pass_through(self):
                """Answers a request that no fault matches."""
                self._proxy()

            def _fault_hang(self, fault):
                self._drain_body()
                front.released.wait(fault.params.get("timeout", 300))
                self.close_connection = True
                _reset(self.connection)

            def _fault_delay(self, fault):
                time.sleep(fault.params.get("seconds", 1.0))
                self._proxy()

            def _fault_reset(self, fault):
                self._drain_body()
                self.close_connection = True
                _reset(self.connection)

            def _fault_status(self, fault):
                self._drain_body()
                body = fault.params.get("body", b"")
                self.send_response_only(fault.params.get("status", 503))
                for k, v in fault.params.get("headers", {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _fault_redirect(self, fault):
                self._drain_body()
                self.send_response_only(fault.params.get("status", 307))
                self.send_header("Location", fault.params["location"] + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _fault_rewrite(self, fault):
                self._proxy(status=fault.params.get("status", 200),
                            drop_headers=fault.params.get("drop_headers", ()))

            def _fault_drop(self, fault):
                conn, resp = self._upstream()
                try:
                    resp.read()  # the registry did it all
                finally:
                    conn.close()
                self.close_connection = True
                _reset(self.connection)

            def _fault_truncate(self, fault):
                self._proxy(keep=fault.params.get("keep", 0))

            def _fault_corrupt(self, fault):
                self._proxy(corrupt_at=fault.params.get("at", 0))

            def _fault_throttle(self, fault):
                self._proxy(rate=fault.params.get("rate", 1 << 20))

            def _fault_throttle_upload(self, fault):
                self._proxy(upload_rate=fault.params.get("rate", 1 << 20))

            def _fault_revoke_token(self, fault):
                self._proxy(keep=fault.params.get("keep", 0), revoke=True)

            def _drain_body(self):
                body, _ = self._request_body()
                for _ in body or ():
                    pass

            def _request_body(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return _chunks_from(self.rfile), True
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    return _counted(self.rfile, length), False
                return None, False

            def _throttled(self, body, rate):
                """Yields body's pieces at `rate` bytes/s; raises if it ends
                before its Content-Length (the client is gone)."""
                expected = int(self.headers.get("Content-Length") or 0)
                got = 0
                started = time.monotonic()
                for data in body:
                    got += len(data)
                    yield data
                    ahead = got / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                if expected and got < expected:
                    raise ConnectionError(f"request body ended at {got} of {expected} bytes")

            def _upstream(self, strip_auth=False, upload_rate=None, path=None):
                """Sends the request to the upstream (at `path` if given);
                returns (connection, response)."""
                body, chunked = self._request_body()
                if body is not None and upload_rate:
                    body = self._throttled(body, upload_rate)
                skip = set(HOP_BY_HOP)
                if strip_auth:
                    skip.add("authorization")
                inject = front.inject_auth and not self.headers.get("Authorization")
                if chunked:
                    skip.discard("transfer-encoding")
                conn = front._connect()
                try:
                    conn.putrequest(self.command, path or self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in skip:
                            conn.putheader(k, v)
                    if inject:
                        conn.putheader("Authorization", front.inject_auth)
                    conn.endheaders()
                    for data in body or ():
                        conn.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                    if body is not None and chunked:
                        conn.send(b"0\r\n\r\n")
                    return conn, conn.getresponse()
                except ConnectionError:
                    if conn.sock:
                        _reset(conn.sock)
                    conn.close()
                    self.close_connection = True
                    _reset(self.connection)
                    raise

            def _proxy(self, strip_auth=False, keep=None, corrupt_at=None, rate=None,
                       revoke=False, upload_rate=None, status=None, drop_headers=()):
                conn, resp = self._upstream(strip_auth, upload_rate)
                try:
                    code = status or resp.status
                    self.send_response_only(code, None if status else resp.reason)
                    length = resp.getheader("Content-Length")
                    no_body = self.command == "HEAD" or code in (204, 304) \
                        or 100 <= code < 200
                    dropped = {h.lower() for h in drop_headers}
                    if no_body and status:
                        dropped.add("content-length")
                    for k, v in resp.getheaders():
                        if k.lower() == "www-authenticate" and front.realm:
                            v = v.replace(*front.realm)
                        if k.lower() not in HOP_BY_HOP and k.lower() not in dropped:
                            self.send_header(k, v)
                    if (length is None and not no_body) or self.close_connection:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if no_body:
                        return
                    sent = 0
                    started = time.monotonic()
                    while True:
                        data = resp.read(CHUNK if rate is None else min(CHUNK, rate // 8 or 1))
                        if not data:
                            break
                        if keep is not None and sent + len(data) >= keep:
                            self.wfile.write(data[:keep - sent])
                            self.wfile.flush()
                            if revoke:
                                with front.lock:
                                    front.revoked.add(self.headers.get("Authorization", ""))
                            self.close_connection = True
                            _reset(self.connection)
                            return
                        if corrupt_at is not None and sent <= corrupt_at < sent + len(data):
                            i = corrupt_at - sent
                            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                        self.wfile.write(data)
                        sent += len(data)
                        if rate is not None:
                            ahead = sent / rate - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch

        return Handler


class HeaderRecorder(_Served):
    """Another host for redirects: records each request's headers and answers
    200 with the bytes served for its path (404 otherwise)."""

    def __init__(self, bind="127.0.0.2"):
        self.lock = threading.Lock()
        self.requests = []  # (method, path, {header: value})
        self.content = {}
        super().__init__(bind)

    def serve(self, path, data):
        with self.lock:
            self.content[path] = data

    def _handler(self):
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                with recorder.lock:
                    recorder.requests.append((self.command, self.path,
                                              dict(self.headers.items())))
                    data = recorder.content.get(urlsplit(self.path).path)
                self.send_response_only(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data or b"")

            do_HEAD = do_GET

        return Handler
