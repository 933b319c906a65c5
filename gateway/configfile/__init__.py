"""The configuration file: YAML that `importconfig` reads and `exportconfig` writes
(docs/configuration.md describes the format)."""

from __future__ import annotations

from gateway.configfile.fields import ConfigFileError
from gateway.configfile.reader import ImportReport, import_config, read_config_file
from gateway.configfile.writer import dump_config, export_config

__all__ = [
    "ConfigFileError",
    "ImportReport",
    "dump_config",
    "export_config",
    "import_config",
    "read_config_file",
]
