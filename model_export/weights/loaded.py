"""What loading weights gives the export (`LoadedWeights`), and the error every source raises
for a problem the user can fix (`WeightsError`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model_contract import Preprocessing, WeightsInfo
from model_export.variants import NUM_CLASSES
from model_export.weights.layouts import KeyLayout

Source = Literal["imagenet", "file", "hub", "random"]


class WeightsError(Exception):
    """A weights problem the user can fix; the message says how."""


@dataclass(frozen=True)
class LoadedWeights:
    """What was learnt about the weights while loading them: what the file's `weights`
    metadata records (`as_metadata`), and what the export needs besides (the transform they
    were trained for, their class count and names)."""

    source: Source
    origin: str | None
    sha256: str | None
    key_layout: KeyLayout | None
    seed: int | None
    published_top1: float | None
    preprocessing: Preprocessing
    container: str | None = None  # which checkpoint entry held the weights
    num_classes: int = NUM_CLASSES
    timm_name: str | None = None
    labels: tuple[str, ...] | None = None  # class names the weights came with (Hub config)
    # Where the transform came from, for the export's message ("weights", "variant default").
    preprocessing_source: str = "the weights"

    def as_metadata(self) -> WeightsInfo:
        """The contract's `weights` object for the exported file."""
        return WeightsInfo(
            source=self.source,
            origin=self.origin,
            sha256=self.sha256,
            key_layout=self.key_layout,
            seed=self.seed,
            published_top1=self.published_top1,
            container=self.container,
        )
