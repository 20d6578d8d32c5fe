"""The memory: `VisualMemory` (core: the open memory and its lifecycle), the reader a viewer gets (reader), and the
parts over the open memory that unlearning, stats and the CLI reach for (erasure, audit, stats)."""

from ..ingest.pipeline import BUILD_CHUNK, BuildReport
from ..label_table import LabelTable
from .core import VisualMemory, check_encoder_fits
from .exemplars import NEAR_DUPLICATE_DISTANCE
from .reader import MemoryReader, OpenReader

__all__ = ["BUILD_CHUNK", "NEAR_DUPLICATE_DISTANCE", "BuildReport", "LabelTable", "MemoryReader", "OpenReader",
           "VisualMemory", "check_encoder_fits"]
