#!/usr/bin/env python3
"""Write a one-layer OCI image archive (the layout `ctr images import` reads) from files on disk.

    oci_archive.py --ref riskloop.local/pause:v1.36.5 --entrypoint /pause --user 65535:65535 \
        --out pause.tar /path/to/pause=/pause

Used by scripts/node.sh for the node's sandbox (pause) image: no registry and no Docker exist here.
The archive is byte-for-byte reproducible (fixed mtimes, owners and order), so its digest changes only
when the files change. Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path


def _layer(files: list[tuple[Path, str]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for source, target in sorted(files, key=lambda pair: pair[1]):
            info = tarfile.TarInfo(target.lstrip("/"))
            data = source.read_bytes()
            info.size = len(data)
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _blob(out: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mtime = 0
    out.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_archive(ref: str, entrypoint: list[str], user: str,
                  files: list[tuple[Path, str]], out_path: Path) -> None:
    layer_tar = _layer(files)
    # mtime=0 in the gzip header keeps the compressed layer reproducible too
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
    }
    tmp = out_path.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        config_bytes = _json(config)
        config_digest = _blob(out, config_bytes)
        layer_digest = _blob(out, layer_gz)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(layer_gz)}],
        }
        manifest_bytes = _json(manifest)
        manifest_digest = _blob(out, manifest_bytes)
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                # containerd names the imported image after this annotation
                "annotations": {"io.containerd.image.name": ref,
                                "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
            }],
        }
        for name, data in (("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", _json(index))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            out.addfile(info, io.BytesIO(data))
    tmp.replace(out_path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", required=True, help="image reference, e.g. riskloop.local/pause:v1.36.5")
    parser.add_argument("--entrypoint", required=True, action="append", help="entrypoint word (repeat)")
    parser.add_argument("--user", default="65535:65535", help="uid:gid the image runs as")
    parser.add_argument("--out", required=True, type=Path, help="archive to write")
    parser.add_argument("files", nargs="+", help="SOURCE=/path/in/image")
    args = parser.parse_args(argv)
    files: list[tuple[Path, str]] = []
    for spec in args.files:
        source, sep, target = spec.partition("=")
        if not sep or not target.startswith("/") or not Path(source).is_file():
            print(f"oci_archive.py: {spec!r}: expected SOURCE=/path/in/image with SOURCE an existing file",
                  file=sys.stderr)
            return 2
        files.append((Path(source), target))
    write_archive(args.ref, args.entrypoint, args.user, files, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
