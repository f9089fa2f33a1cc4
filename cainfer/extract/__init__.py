"""Extraction: motion correction, ROIs, neuropil, baseline and ΔF/F (scipy, scikit-image)."""

from cainfer.extract.baseline import BASELINE_METHODS, baseline
from cainfer.extract.detect import detect_rois
from cainfer.extract.imported import (
    TRACE_FORMATS,
    load_caiman,
    load_suite2p,
    load_traces,
    trace_format,
)
from cainfer.extract.neuropil import neuropil_masks
from cainfer.extract.nwb import load_nwb, write_nwb
from cainfer.extract.ratio import extract_ratio
from cainfer.extract.registration import make_reference, register_frames, shift_frame
from cainfer.extract.summary import SummaryAccumulator
from cainfer.extract.traces import ExtractionWarning, extract_traces

__all__ = [
    "BASELINE_METHODS",
    "TRACE_FORMATS",
    "ExtractionWarning",
    "SummaryAccumulator",
    "baseline",
    "detect_rois",
    "extract_ratio",
    "extract_traces",
    "load_caiman",
    "load_nwb",
    "load_suite2p",
    "load_traces",
    "make_reference",
    "neuropil_masks",
    "register_frames",
    "shift_frame",
    "trace_format",
    "write_nwb",
]
