"""A small bearer-token issuer for docker-registry's `auth.token` mode.

It speaks the Docker token protocol: `GET /token?service=S&scope=T:NAME:ACTIONS`
(HTTP Basic for a user, none for anonymous), and the OAuth2 form
`POST /token` with grant_type=password or grant_type=refresh_token (an
identity token from `refresh_tokens`). It answers with an RS256 JWT whose
`access` claim holds, for each requested scope, the requested actions that the
rules allow. The JWT header carries the signing certificate as `x5c`, which
docker-registry 2.8 verifies against its `rootcertbundle`.

Config (JSON file, the one argument):
  port, key, cert, issuer, service, ttl (seconds), log (path)
  users: {"alice": "password", ...}
  refresh_tokens: {"TOKEN": "alice", ...}  (identity tokens, refresh_token grant)
  rules: [{"type": "repository", "name": "public/*", "who": ["*"],
           "actions": ["pull"]}, ...]
    name is an fnmatch pattern, in which "${user}" stands for the user's own
    name (a rule with it never matches anonymous requests); who holds user
    names, "*" (everyone, anonymous included), "anonymous" or
    "authenticated".
Wrong credentials get 401. Run with /usr/bin/python3 (python3-jwt).
"""

import base64
import fnmatch
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

# Like Docker Hub: no catalog for anyone, official images under library/
# pulled by anyone, each user pulling and pushing only under their own
# namespace; "admin" (the seeding user) and "reader" (pulls everything) are
# test accounts.
HUB_RULES = [
    {"type": "repository", "name": "library/*", "who": ["*"], "actions": ["pull"]},
    {"type": "repository", "name": "${user}/*", "who": ["authenticated"],
     "actions": ["pull", "push"]},
    {"type": "repository", "name": "*", "who": ["admin"], "actions": ["pull", "push", "delete"]},
    {"type": "repository", "name": "*", "who": ["reader"], "actions": ["pull"]},
]

DEFAULT_RULES = [
    {"type": "registry", "name": "catalog", "who": ["*"], "actions": ["*"]},
    {"type": "repository", "name": "public/*", "who": ["*"], "actions": ["pull"]},
    {"type": "repository", "name": "*", "who": ["alice"],
     "actions": ["pull", "push", "delete"]},
]


def parse_scope(scope):
    """'repository:a/b:pull,push' -> ('repository', 'a/b', ['pull', 'push']).
    The type may carry a class ('repository(plugin)'); names hold no ':'
    except a registry host's port, so the actions follow the last ':'."""
    first = scope.find(":")
    last = scope.rfind(":")
    if first < 0 or last == first:
        return None
    rtype = scope[:first].split("(")[0]
    return rtype, scope[first + 1:last], [a for a in scope[last + 1:].split(",") if a]


class Policy:
    def __init__(self, users, rules):
        self.users = users
        self.rules = rules

    def authenticate(self, header):
        """Returns the user name, '' for anonymous, None for bad credentials."""
        if not header:
            return ""
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if user in self.users and self.users[user] == password:
            return user
        return None

    def _who_matches(self, who, user):
        return ("*" in who or user in who and user != ""
                or ("anonymous" in who and user == "")
                or ("authenticated" in who and user != ""))

    def allowed(self, user, rtype, name):
        actions = set()
        for rule in self.rules:
            if rule.get("type", "repository") != rtype:
                continue
            pattern = rule["name"]
            if "${user}" in pattern:
                if not user:
                    continue
                pattern = pattern.replace("${user}", user)
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            if self._who_matches(rule.get("who", []), user):
                actions.update(rule.get("actions", []))
        return actions

    def grant(self, user, scopes):
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            rtype, name, wanted = parsed
            allowed = self.allowed(user, rtype, name)
            granted = [a for a in wanted if a in allowed or "*" in allowed]
            if granted:
                access.append({"type": rtype, "name": name, "actions": granted})
        return access


class Issuer:
    def __init__(self, config):
        self.config = config
        with open(config["key"], "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(config["cert"], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.policy = Policy(config.get("users", {}), config.get("rules", DEFAULT_RULES))
        # refresh token -> user: identity tokens (docker's "identitytoken")
        self.refresh_tokens = config.get("refresh_tokens", {})
        self.ttl = int(config.get("ttl", 300))
        self.log_lock = threading.Lock()
        self.log_path = config.get("log")

    def log(self, record):
        if not self.log_path:
            return
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def token(self, user, service, scopes):
        now = int(time.time())
        claims = {
            "iss": self.config["issuer"],
            "sub": user,
            "aud": service,
            "exp": now + self.ttl,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": self.policy.grant(user, scopes),
        }
        encoded = jwt.encode(claims, self.key, algorithm="RS256",
                             headers={"typ": "JWT", "x5c": self.x5c})
        return encoded, claims


def make_handler(issuer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def _reply(self, status, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _issue(self, user, service, scopes, method):
            if user is None:
                issuer.log({"method": method, "user": None, "scopes": scopes, "status": 401})
                self._reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                              "message": "invalid credentials"}]},
                            [("WWW-Authenticate", 'Basic realm="regfs-token"')])
                return
            if service != issuer.config["service"]:
                self._reply(400, {"errors": [{"code": "UNSUPPORTED",
                                              "message": f"unknown service {service!r}"}]})
                return
            token, claims = issuer.token(user, service, scopes)
            issuer.log({"method": method, "user": user, "scopes": scopes,
                        "access": claims["access"], "status": 200})
            self._reply(200, {"token": token, "access_token": token,
                              "expires_in": issuer.ttl,
                              "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime(claims["iat"]))})

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            q = parse_qs(url.query)
            user = issuer.policy.authenticate(self.headers.get("Authorization"))
            self._issue(user, q.get("service", [""])[0], q.get("scope", []), "GET")

        def do_POST(self):
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            if url.path != "/token":
                self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            user = ""
            grant = form.get("grant_type", [""])[0]
            if grant == "password":
                name, password = form.get("username", [""])[0], form.get("password", [""])[0]
                users = issuer.policy.users
                user = name if name in users and users[name] == password else None
            elif grant == "refresh_token":
                user = issuer.refresh_tokens.get(form.get("refresh_token", [""])[0])
            scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
            self._issue(user, form.get("service", [""])[0], scopes, "POST " + grant)

    return Handler


def main(argv):
    if len(argv) != 2:
        print("usage: token_issuer.py CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        config = json.load(f)
    server = ThreadingHTTPServer(("127.0.0.1", int(config["port"])), make_handler(Issuer(config)))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
