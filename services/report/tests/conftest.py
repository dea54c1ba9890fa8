"""Fixtures of the report service's tests (helpers live in ``helpers_report.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
