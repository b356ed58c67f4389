"""Feast definitions for the `feast` CLI: the same objects riskloop applies from Python.

Set RISKLOOP_FEAST_DIR to the state's Feast directory (default .riskloop/feast).
"""

import os
from pathlib import Path

from riskloop.features.definitions import build_definitions

_defs = build_definitions(Path(os.environ.get("RISKLOOP_FEAST_DIR", ".riskloop/feast")) / "offline")
card, merchant = _defs.card, _defs.merchant
card_daily, merchant_daily, card_recent = _defs.card_daily, _defs.merchant_daily, _defs.card_recent
card_recent_push = _defs.push_source
transaction_context = _defs.transaction_context
fraud_detector_v1 = _defs.service
