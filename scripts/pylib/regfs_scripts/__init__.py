"""Helpers shared by scripts/ and tests/integration/: local registries, token
issuer, test certificates and deterministic OCI images. Standard library only,
except the token issuer (python3-jwt, python3-cryptography)."""

import os
import socket

# The interpreter with Debian's python3-jwt, python3-cryptography and
# python3-pytest; a pyenv python may shadow it on PATH.
PYTHON = "/usr/bin/python3"

SCRIPTS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
