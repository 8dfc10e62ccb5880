"""The sample images pushed by scripts/seed, shared by the demo and tests.

Every image is made by mkimage (no network); one layout per preset is built
under a work directory and pushed under each of its names."""

import json
import os
import sys
import tempfile

from . import mkimage
from .registry import load_info

# (repository, tag, preset)
SAMPLES = [
    ("demo/hello", "v1", "hello"),
    ("demo/hello", "latest", "hello"),
    ("demo/hello", "v2", "alpine-like"),
    ("library/alpine-like", "3", "alpine-like"),
    ("demo/multi", "1", "multi"),
    ("demo/docker", "v1", "docker"),
    ("team/project/app", "v1", "hello"),
    ("public/hello", "v1", "hello"),
    ("private/app", "v1", "alpine-like"),
]


# For a registry set up like Docker Hub (scripts/registry start --auth hub):
# official images under library/, and users' own repositories.
HUB_SAMPLES = [
    ("library/hello", "latest", "hello"),
    ("library/alpine-like", "3", "alpine-like"),
    ("carol/tools", "v1", "hello"),
    ("dave/private", "v1", "alpine-like"),
]


def seed(host, work_dir, creds=None, cert_dir=None, samples=SAMPLES):
    """Builds and pushes samples to host; returns {"repo:tag": descriptor}."""
    pushed = {}
    for repo, tag, preset in samples:
        layout = os.path.join(work_dir, preset)
        try:
            mkimage.tagged(layout, preset)
        except (OSError, mkimage.ImageError):
            mkimage.build(layout, preset, mkimage.preset(preset))
        pushed[f"{repo}:{tag}"] = mkimage.push(
            layout, preset, f"{host}/{repo}:{tag}", creds=creds,
            tls_verify=bool(cert_dir), cert_dir=cert_dir)
    return pushed


def main(argv):
    import argparse
    parser = argparse.ArgumentParser(
        prog="seed", description="Push the sample images to a registry.")
    parser.add_argument("registry",
                        help="HOST:PORT, or a directory made by scripts/registry start "
                             "(its host, credentials and CA are used)")
    parser.add_argument("--creds", metavar="USER:PASSWORD")
    parser.add_argument("--cert-dir", help="CA directory (default: TLS not verified)")
    parser.add_argument("--work-dir", help="where layouts are built (default: a temp dir)")
    args = parser.parse_args(argv[1:])
    host, creds, cert_dir = args.registry, args.creds, args.cert_dir
    samples = SAMPLES
    if os.path.isdir(args.registry):
        info = load_info(args.registry)
        if info.get("auth") == "hub":
            samples = HUB_SAMPLES
        host = info["host"]
        if not creds and info.get("user"):
            creds = f"{info['user']}:{info['password']}"
        cert_dir = cert_dir or info.get("cert_dir")
    try:
        if args.work_dir:
            pushed = seed(host, args.work_dir, creds, cert_dir, samples)
        else:
            with tempfile.TemporaryDirectory(prefix="regfs-seed-") as tmp:
                pushed = seed(host, tmp, creds, cert_dir, samples)
    except (mkimage.ImageError, OSError) as e:
        print(f"seed: {e}", file=sys.stderr)
        return 1
    for name, desc in pushed.items():
        print(f"{host}/{name} {desc['digest']}")
    return 0
