"""Everything a request needs, built by the app's lifespan and kept on ``app.state.runtime``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .admission import Admission
from .batcher import Batcher
from .config import BatchPolicy, Settings
from .decoding import Decoder
from .metrics import Metrics
from .session import ModelSession


@dataclass
class Runtime:
    settings: Settings
    session: ModelSession
    batcher: Batcher
    metrics: Metrics
    executor: ThreadPoolExecutor  # the preprocessing pool
    batch_policy: BatchPolicy
    admission: Admission  # bounds the requests in preprocessing + queue + inference
    decoder: Decoder  # decodes uploads in worker processes, within time and memory budgets
    ready: bool = False
