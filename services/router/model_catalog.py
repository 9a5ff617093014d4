"""Which models the cluster serves, from the workers registered in etcd, and their tokenizers.

A model stays known after its last worker leaves, so clients get 503 (retry
later) rather than 404 while it is being restarted or scaled from zero.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from services.router import metrics
from services.router.errors import ModelNotFound, NoCapacity
from tessera.runtime.models.tokenizer import ModelTokenizer
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.router")


@dataclass
class ModelEntry:
    name: str
    model_path: str = ""
    max_model_len: int = 0
    kv_block_size: int = 16
    workers: dict[str, pb.WorkerIdentity] = field(default_factory=dict)
    # Set while at least one worker serves the model: requests held through a scale from zero wait on it.
    serving: asyncio.Event = field(default_factory=asyncio.Event)


class ModelCatalog:
    def __init__(self, tokenizer_paths: dict[str, str] | None = None) -> None:
        self.models: dict[str, ModelEntry] = {}
        self._worker_model: dict[str, str] = {}
        self._tokenizer_paths = dict(tokenizer_paths or {})
        self._tokenizers: dict[str, ModelTokenizer] = {}
        self._loading: dict[str, asyncio.Task] = {}

    def worker_registered(self, identity: pb.WorkerIdentity) -> None:
        entry = self.models.get(identity.model)
        if entry is None:
            entry = self.models[identity.model] = ModelEntry(identity.model)
            metrics.model_seen(identity.model)
            log.info("model %s is served (worker %s)", identity.model, identity.id)
        entry.workers[identity.id] = identity
        entry.serving.set()
        self._worker_model[identity.id] = identity.model
        entry.model_path = identity.model_path or entry.model_path
        entry.kv_block_size = identity.kv_block_size or entry.kv_block_size
        lens = [w.max_model_len for w in entry.workers.values() if w.max_model_len]
        entry.max_model_len = min(lens) if lens else entry.max_model_len
        if identity.model not in self._tokenizers and identity.model not in self._loading:
            # Load the tokenizer now, off the event loop, so the first request does not pay for it.
            self._loading[identity.model] = asyncio.create_task(self._load_tokenizer(entry))

    def worker_left(self, worker_id: str) -> str:
        """Forget a worker; return its address (so its channel can be closed), or ""."""
        model = self._worker_model.pop(worker_id, None)
        if model and model in self.models:
            entry = self.models[model]
            identity = entry.workers.pop(worker_id, None)
            if not entry.workers:
                entry.serving.clear()
            return identity.address if identity else ""
        return ""

    def get(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            raise ModelNotFound(name)
        return entry

    async def tokenizer(self, entry: ModelEntry) -> ModelTokenizer:
        tok = self._tokenizers.get(entry.name)
        if tok is not None:
            return tok
        task = self._loading.get(entry.name)
        if task is None or (task.done() and task.exception() is not None):
            task = self._loading[entry.name] = asyncio.create_task(self._load_tokenizer(entry))
        try:
            return await asyncio.shield(task)
        except Exception as exc:  # noqa: BLE001 - reported to the client as unavailable
            raise NoCapacity(f"cannot load the tokenizer of {entry.name}: {exc}", retry_after=5) from None

    async def _load_tokenizer(self, entry: ModelEntry) -> ModelTokenizer:
        source = self._tokenizer_paths.get(entry.name) or entry.model_path
        try:
            tok = await asyncio.to_thread(_open_tokenizer, source)
        except Exception as exc:
            log.warning("tokenizer of %s from %s: %s", entry.name, source, exc)
            raise
        self._tokenizers[entry.name] = tok
        return tok


def _open_tokenizer(source: str) -> ModelTokenizer:
    """A local folder, or a hub id whose tokenizer files are fetched (only those)."""
    if Path(source).is_dir():
        return ModelTokenizer(source)
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        source,
        allow_patterns=["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"],
    )
    return ModelTokenizer(folder)
