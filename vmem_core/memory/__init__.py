"""The memory: `VisualMemory` (core: the open memory and its lifecycle) and its nouns, `exemplars`, `search`,
`reliability`, `index`, `audit`; the reader a viewer gets (reader); the narrow erase interface unlearning uses
(erasure); `vmem stats` (stats). docs/architecture.md maps them."""

from ..ingest.pipeline import BUILD_CHUNK, BuildReport
from ..label_table import LabelTable
from .core import VisualMemory, check_encoder_fits
from .exemplars import NEAR_DUPLICATE_DISTANCE
from .reader import MemoryReader, OpenReader

__all__ = ["BUILD_CHUNK", "NEAR_DUPLICATE_DISTANCE", "BuildReport", "LabelTable", "MemoryReader", "OpenReader",
           "VisualMemory", "check_encoder_fits"]
