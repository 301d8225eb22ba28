"""The monitor tests share hand-made probe tables (``test_client_probe.py``); with pytest's importlib import
mode nothing puts this folder on the import path, so this file does."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
