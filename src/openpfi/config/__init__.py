"""The TOML config as pydantic models: the one home of every default.

A config file holds only what differs from these defaults; ``--set
section.key=value`` overrides any key. Unknown keys, wrong types and
out-of-range values are refused with one line naming the key and the fix.
One module per group of sections; ``root.py`` holds the checks that span them.
"""

from openpfi.config.data import DataConfig
from openpfi.config.loading import apply_overrides, dump_toml, from_dict, load_config
from openpfi.config.methods import AlignmentConfig, PersonalizationConfig
from openpfi.config.model import LoraConfig, ModelConfig
from openpfi.config.monitor import MARGIN_METRICS, PROBE_SUITES, MonitorConfig
from openpfi.config.privacy import FlowerConfig, OutputConfig, PrivacyConfig
from openpfi.config.rag import RagConfig
from openpfi.config.root import Config
from openpfi.config.section import Section
from openpfi.config.training import ClientConfig, FederationConfig

__all__ = [
    "MARGIN_METRICS", "PROBE_SUITES", "AlignmentConfig", "ClientConfig", "Config", "DataConfig", "FederationConfig",
    "FlowerConfig", "LoraConfig", "ModelConfig", "MonitorConfig", "OutputConfig", "PersonalizationConfig",
    "PrivacyConfig", "RagConfig", "Section", "apply_overrides", "dump_toml", "from_dict", "load_config",
]
