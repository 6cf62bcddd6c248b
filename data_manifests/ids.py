"""Content-hash ids: the same bytes give the same id on every machine and every run."""
from __future__ import annotations

import hashlib

ID_BYTES = 16  # 32 hex characters: collisions are negligible at billions of items


def bytes_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=ID_BYTES).hexdigest()


def file_digest(path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=ID_BYTES)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def image_id(image_digest: str) -> str:
    """An image's id is the digest of its bytes."""
    return image_digest


def pair_id(rainy_digest: str, clean_digest: str) -> str:
    """A pair's id depends on both files' bytes and on which one is rainy."""
    return bytes_digest(f"pair:{rainy_digest}:{clean_digest}".encode())


def shard_of(item_id: str, num_shards: int) -> int:
    """Shards are cut by id hash, so a rerun splits the same work the same way."""
    return int(item_id[:8], 16) % num_shards
