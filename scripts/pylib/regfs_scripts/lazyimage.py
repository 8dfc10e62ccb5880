"""eStargz and zstd:chunked layers, written from their published format
descriptions (no tool in Debian writes them), for tests and benchmarks.

convert(src_layout, tag, out_layout, out_tag, formats) rewrites the layers
of an image built by mkimage (one platform, uncompressed or gzip layers) and
writes a new manifest and config under out_tag:

  eStargz (stargz-snapshotter docs/estargz.md): a gzip layer whose regular
    files start new gzip members, one per chunk; the last member holds the
    tar entry `stargz.index.json` (the table of contents, JSON) and the tar's
    end; a 51-byte footer member carries the table's offset in its extra
    field ("%016x" + "STARGZ"). Layer annotation
    containerd.io/snapshot/stargz/toc.digest = sha256 of the JSON.
  legacy stargz (CRFS, the format eStargz grew from; "stargz" below): the
    same layout with a 47-byte footer whose gzip extra field is the 22
    bytes "%016x" + "STARGZ" alone (no 'S','G' subfield header), and no
    chunkDigest (only a regular file's whole `digest`). Carries the
    eStargz annotation so that its table can be checked.
  zstd:chunked (containers/storage pkg/chunked): a zstd layer whose file
    chunks are zstd frames of their own and whose tar headers go in frames
    between them; then skippable frames with the zstd-compressed table
    ("manifest"), a tar-split stream (empty here: regfs does not use it) and
    a 64-byte footer (offsets, lengths, type 1, "GNUlInUx"). Annotations
    io.github.containers.zstd-chunked.manifest-checksum (sha256 of the
    compressed table) and ...manifest-position ("offset:length:size:1").

The table lists every tar entry (reg, dir, symlink, hardlink, char, block,
fifo; whiteouts are the regular `.wh.` files the tar has) with mode, owner,
RFC 3339 mtime, link name, device numbers, base64 xattrs; a regular file's
first chunk is on its entry and further chunks follow as "chunk" entries,
each with offset, chunkOffset, chunkSize and chunkDigest.

formats: one per layer, "estargz", "stargz", "zstd:chunked" or None (kept as is).
damage: {layer index: "toc-digest" (annotation names another digest) |
"toc-json" (the table is not JSON; the annotation matches it) | "no-table"
(a plain gzip layer carrying the eStargz annotation: no footer, no table)}.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
import time

from regfs_scripts import mkimage

ESTARGZ_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
ZSTD_CHECKSUM = "io.github.containers.zstd-chunked.manifest-checksum"
ZSTD_POSITION = "io.github.containers.zstd-chunked.manifest-position"
TOC_NAME = "stargz.index.json"
SKIPPABLE_MAGIC = 0x184D2A50
CHUNK_SIZE = 1 << 20

_TYPES = {tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
          tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


def _sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _rfc3339(mtime):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(mtime)))


def _zstd(data):
    return subprocess.run(["zstd", "-q", "-c", "-3", "--no-check"], input=data,
                          capture_output=True, check=True).stdout


def _members(tar_bytes):
    """(TarInfo, raw header bytes, data bytes, padding bytes) of each entry,
    and the bytes after the last entry (the end-of-archive blocks)."""
    out, end = [], 0
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for m in tar:
            if m.sparse is not None:
                raise mkimage.ImageError("sparse files are not written lazily here")
            header = tar_bytes[m.offset:m.offset_data]
            data = tar_bytes[m.offset_data:m.offset_data + m.size] if m.isreg() else b""
            size = m.size if m.isreg() else 0
            pad_end = m.offset_data + (size + 511) // 512 * 512
            out.append((m, header, data, tar_bytes[m.offset_data + size:pad_end]))
            end = pad_end
    return out, tar_bytes[end:]


def _entry(m):
    e = {"name": m.name + ("/" if m.isdir() else ""), "type": _TYPES.get(m.type, "reg"),
         "mode": m.mode, "uid": m.uid, "gid": m.gid, "modtime": _rfc3339(m.mtime)}
    if m.uname:
        e["userName"] = m.uname
    if m.gname:
        e["groupName"] = m.gname
    if m.issym() or m.islnk():
        e["linkName"] = m.linkname
    if m.ischr() or m.isblk():
        e["devMajor"], e["devMinor"] = m.devmajor, m.devminor
    xattrs = {k[len("SCHILY.xattr."):]: base64.b64encode(
        v.encode("utf-8", "surrogateescape")).decode()
        for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    if xattrs:
        e["xattrs"] = xattrs
    if m.isreg():
        e["size"] = m.size
    return e


def _chunks(data, chunk_size):
    return [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]


def _file_entries(m, data, offsets, chunk_size, ends=None, chunk_digests=True):
    """The table entries of regular file m: its own with the first chunk, then
    "chunk" entries. offsets[i] (and ends[i]) is chunk i's compressed range."""
    entries = []
    for i, chunk in enumerate(_chunks(data, chunk_size)):
        e = _entry(m) if i == 0 else {"name": m.name, "type": "chunk"}
        if i == 0:
            e["digest"] = _sha(data)
        e.update({"offset": offsets[i], "chunkOffset": i * chunk_size,
                  "chunkSize": len(chunk)})
        if chunk_digests:
            e["chunkDigest"] = _sha(chunk)
        if ends is not None:
            e["endOffset"] = ends[-1] if i == 0 else ends[i]
        entries.append(e)
    return entries


def estargz(tar_bytes, chunk_size=CHUNK_SIZE, damage=None, legacy=False):
    """(blob, uncompressed tar, annotations) of tar_bytes as an eStargz layer
    (legacy: as a legacy stargz one)."""
    members, _ = _members(tar_bytes)
    blob, plain, pending, entries = io.BytesIO(), io.BytesIO(), [], []

    def flush():
        if pending:
            data = b"".join(pending)
            blob.write(gzip.compress(data, compresslevel=6, mtime=0))
            plain.write(data)
            pending.clear()

    for m, header, data, pad in members:
        pending.append(header)
        if m.isreg() and m.size > 0:
            flush()
            offsets = []
            for chunk in _chunks(data, chunk_size):
                offsets.append(blob.tell())
                pending.append(chunk)
                flush()
            entries.extend(_file_entries(m, data, offsets, chunk_size,
                                         chunk_digests=not legacy))
        else:
            entries.append(_entry(m))
        pending.append(pad)
    flush()
    toc = json.dumps({"version": 1, "entries": entries}, separators=(",", ":")).encode()
    if damage == "toc-json":
        toc = b"{this is not a table of contents"
    info = tarfile.TarInfo(TOC_NAME)
    info.size, info.mode, info.mtime = len(toc), 0o444, 0
    toc_tar = (info.tobuf(format=tarfile.USTAR_FORMAT) + toc + b"\0" * (-len(toc) % 512)
               + b"\0" * 1024)
    toc_offset = blob.tell()
    blob.write(gzip.compress(toc_tar, compresslevel=6, mtime=0))
    plain.write(toc_tar)
    extra = b"%016xSTARGZ" % toc_offset
    if not legacy:
        extra = b"SG" + struct.pack("<H", 22) + extra
    blob.write(b"\x1f\x8b\x08\x04\0\0\0\0\0\xff" + struct.pack("<H", len(extra)) + extra
               + b"\x01\x00\x00\xff\xff" + b"\0" * 8)
    digest = _sha(toc) if damage != "toc-digest" else _sha(b"another table")
    return blob.getvalue(), plain.getvalue(), {ESTARGZ_TOC_DIGEST: digest}


def zstd_chunked(tar_bytes, chunk_size=CHUNK_SIZE, damage=None):
    """(blob, uncompressed tar, annotations) of tar_bytes as a zstd:chunked layer."""
    members, trailer = _members(tar_bytes)
    blob, pending, entries = io.BytesIO(), [], []

    def flush():
        if pending:
            blob.write(_zstd(b"".join(pending)))
            pending.clear()

    for m, header, data, pad in members:
        pending.append(header)
        if m.isreg() and m.size > 0:
            flush()
            offsets, ends = [], []
            for chunk in _chunks(data, chunk_size):
                offsets.append(blob.tell())
                blob.write(_zstd(chunk))
                ends.append(blob.tell())
            entries.extend(_file_entries(m, data, offsets, chunk_size, ends))
        else:
            entries.append(_entry(m))
        pending.append(pad)
    pending.append(trailer)
    flush()
    toc = json.dumps({"version": 1, "entries": entries}, separators=(",", ":")).encode()
    if damage == "toc-json":
        toc = b"{this is not a table of contents"
    manifest = _zstd(toc)
    blob.write(struct.pack("<II", SKIPPABLE_MAGIC, len(manifest)))
    manifest_offset = blob.tell()
    blob.write(manifest)
    split = _zstd(b"")
    blob.write(struct.pack("<II", SKIPPABLE_MAGIC, len(split)))
    split_offset = blob.tell()
    blob.write(split)
    blob.write(struct.pack("<II", SKIPPABLE_MAGIC, 64))
    blob.write(struct.pack("<QQQQQQQ", manifest_offset, len(manifest), len(toc), 1,
                           split_offset, len(split), 0) + b"GNUlInUx")
    digest = _sha(manifest) if damage != "toc-digest" else _sha(b"another table")
    return blob.getvalue(), tar_bytes, {
        ZSTD_CHECKSUM: digest,
        ZSTD_POSITION: f"{manifest_offset}:{len(manifest)}:{len(toc)}:1"}


def _read_json(layout, digest):
    with open(os.path.join(layout.blobs, digest.split(":", 1)[1]), "rb") as f:
        return json.load(f)


def _layer_tar(layout, desc):
    with open(os.path.join(layout.blobs, desc["digest"].split(":", 1)[1]), "rb") as f:
        data = f.read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def convert(src, tag, out, out_tag, formats, damage=None, chunk_size=CHUNK_SIZE):
    """Writes image src:tag into layout out as out_tag with layer i in
    formats[i] ("estargz", "zstd:chunked" or None: as it is); returns the
    new manifest's descriptor."""
    damage = damage or {}
    source = mkimage.Layout(src)
    target = mkimage.Layout(out)
    top = mkimage.tagged(src, tag)
    manifest = _read_json(source, top["digest"])
    config = _read_json(source, manifest["config"]["digest"])
    layers, diff_ids = [], []
    for i, desc in enumerate(manifest["layers"]):
        fmt = formats[i] if i < len(formats) else None
        if fmt is None:
            with open(os.path.join(source.blobs, desc["digest"].split(":", 1)[1]), "rb") as f:
                target.put_bytes(f.read())
            layers.append(desc)
            diff_ids.append(config["rootfs"]["diff_ids"][i])
            continue
        writer = {"estargz": estargz, "zstd:chunked": zstd_chunked,
                  "stargz": lambda *a: estargz(*a, legacy=True)}[fmt]
        if damage.get(i) == "no-table":
            plain = _layer_tar(source, desc)
            blob = gzip.compress(plain, compresslevel=6, mtime=0)
            notes = {ESTARGZ_TOC_DIGEST: _sha(b"no table")}
        else:
            blob, plain, notes = writer(_layer_tar(source, desc), chunk_size, damage.get(i))
        digest, size = target.put_bytes(blob)
        media = mkimage.OCI_LAYER["zstd" if fmt == "zstd:chunked" else "gzip"]
        layers.append({"mediaType": media, "digest": digest, "size": size,
                       "annotations": notes})
        diff_ids.append(_sha(plain))
    config["rootfs"]["diff_ids"] = diff_ids
    config_digest, config_size = target.put_bytes(mkimage._json_bytes(config))
    manifest["config"] = dict(manifest["config"], digest=config_digest, size=config_size)
    manifest["layers"] = layers
    digest, size = target.put_bytes(mkimage._json_bytes(manifest))
    result = {"mediaType": manifest["mediaType"], "digest": digest, "size": size}
    target.tag(out_tag, result)
    return result
