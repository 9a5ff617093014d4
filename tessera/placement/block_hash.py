"""Chained block hashes: what a prefix cache matches on.

An engine caches KV in blocks of `block_size` tokens; a block can be reused by
another request only if everything before it is identical too, so each
block's hash folds in its parent's. Two sources of content exist:

- real token ids (the sim worker, and the router computing where a prompt is
  cached): `token_block_hashes`;
- traces that only say which prefix blocks are shared (Mooncake's `hash_ids`,
  one id per 512 tokens; our synthetic workloads): `content_block_hashes`
  maps those ids to the engine's own block size.
"""

from __future__ import annotations

from collections.abc import Sequence

_MASK = (1 << 64) - 1
# The block size of the hashes routers send and schedulers index: every engine's
# block size (16, 32, 64 tokens) is a multiple of it, so one prompt hash serves all.
CANONICAL_BLOCK_TOKENS = 16


def token_block_hashes(token_ids: Sequence[int], block_size: int, parent: int = 0) -> list[int]:
    """64-bit chained hashes of each full block of `token_ids` (a trailing partial block has none).

    CPython's tuple hash of ints: about 0.3 us a block, so the router can hash every
    prompt, and the same in every process (ints and tuples of ints are not
    salted by PYTHONHASHSEED; all Tessera services run the same CPython).
    """
    out = []
    h = parent
    ids = list(token_ids)
    for start in range(0, len(ids) - block_size + 1, block_size):
        h = hash((h, *ids[start : start + block_size])) & _MASK
        out.append(h)
    return out


def content_block_hashes(
    content_ids: Sequence[int], content_block_tokens: int, total_tokens: int, block_size: int
) -> list[int]:
    """Engine-block hashes for a sequence described by prefix-identifying content ids.

    `content_ids[j]` names tokens [j*G, (j+1)*G) *and everything before them*
    (G = content_block_tokens), as Mooncake's hash_ids do. An engine block
    ending at position p is then identified by the id of the content block
    holding p and p's offset in it. Blocks past the described content have no hash.
    """
    g = content_block_tokens
    full = min(total_tokens, len(content_ids) * g) // block_size
    out = []
    for k in range(full):
        last = (k + 1) * block_size - 1
        out.append(hash((content_ids[last // g], last % g)) & _MASK)
    return out
