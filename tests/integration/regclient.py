"""A plain HTTP client of a test registry: what `curl` would get, used as the
reference that the bytes seen through a mount are compared with. It follows
the auth flow itself (Basic, or a bearer token from the realm)."""

import base64
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


class HTTPStatus(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


def parse_challenge(header):
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryClient:
    def __init__(self, url, user=None, password=None, ca_cert=None):
        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self.ctx = None
        if self.url.startswith("https"):
            self.ctx = ssl.create_default_context(cafile=ca_cert)
        self._tokens = {}

    def _basic(self):
        raw = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _open(self, path, headers, method="GET"):
        req = urllib.request.Request(self.url + path, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.ctx) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    def _token(self, params):
        query = {"service": params.get("service", "")}
        url = params["realm"] + "?" + urllib.parse.urlencode(query)
        if params.get("scope"):
            url += "&" + urllib.parse.urlencode({"scope": params["scope"]})
        headers = {}
        if self.user:
            headers["Authorization"] = self._basic()
        req = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)["token"]

    def request(self, path, headers=None, method="GET"):
        """(status, headers, body) after the auth flow; no raise on status."""
        headers = dict(headers or {})
        status, rheaders, body = self._open(path, headers, method)
        if status != 401:
            return status, rheaders, body
        challenge = {k.lower(): v for k, v in rheaders.items()}.get("www-authenticate", "")
        scheme, params = parse_challenge(challenge)
        if scheme == "basic" and self.user:
            headers["Authorization"] = self._basic()
        elif scheme == "bearer":
            try:
                headers["Authorization"] = "Bearer " + self._token(params)
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers.items()), e.read()
        else:
            return status, rheaders, body
        return self._open(path, headers, method)

    def get(self, path, headers=None):
        status, rheaders, body = self.request(path, headers)
        if status != 200:
            raise HTTPStatus(status, body)
        return rheaders, body

    def manifest(self, repo, reference):
        """(bytes, media type, digest) as the registry serves them."""
        headers, body = self.get(f"/v2/{repo}/manifests/{reference}",
                                 {"Accept": MANIFEST_ACCEPT})
        lower = {k.lower(): v for k, v in headers.items()}
        return body, lower["content-type"], lower["docker-content-digest"]

    def blob(self, repo, digest):
        return self.get(f"/v2/{repo}/blobs/{digest}")[1]

    def tags(self, repo):
        return json.loads(self.get(f"/v2/{repo}/tags/list")[1])["tags"] or []

    def catalog(self):
        """Every repository, following Link pages."""
        repos, path = [], "/v2/_catalog"
        while path:
            headers, body = self.get(path)
            repos += json.loads(body)["repositories"]
            link = {k.lower(): v for k, v in headers.items()}.get("link")
            path = re.match(r"<([^>]*)>", link).group(1) if link else None
        return repos

    def reachable(self, repo, reference):
        """Every blob a tag reaches: [(digest, size, mediaType, bytes)], the
        tag's manifest (or index) first, then per platform manifest, config,
        layers (bytes of layers are not fetched: None)."""
        body, media_type, digest = self.manifest(repo, reference)
        out = [(digest, len(body), media_type, body)]
        manifests = [json.loads(body)] if media_type not in INDEX_TYPES else []
        if media_type in INDEX_TYPES:
            for m in json.loads(body)["manifests"]:
                mbody, mtype, mdigest = self.manifest(repo, m["digest"])
                out.append((mdigest, len(mbody), mtype, mbody))
                manifests.append(json.loads(mbody))
        for m in manifests:
            c = m["config"]
            out.append((c["digest"], c["size"], c["mediaType"], None))
            for layer in m["layers"]:
                out.append((layer["digest"], layer["size"], layer["mediaType"], None))
        return out
