"""Orchestration: pipeline configs, resumable parallel runs with provenance, reports, NWB."""

from cainfer.pipeline.config import SCHEMA, Config, ConfigError, Recording, load_config
from cainfer.pipeline.export import export_nwb
from cainfer.pipeline.report import write_report
from cainfer.pipeline.run import RunError, roi_seed, run_pipeline

__all__ = [
    "SCHEMA",
    "Config",
    "ConfigError",
    "Recording",
    "RunError",
    "export_nwb",
    "load_config",
    "roi_seed",
    "run_pipeline",
    "write_report",
]
