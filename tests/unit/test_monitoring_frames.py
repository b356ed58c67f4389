"""The reference sample and the prediction log end up in one representation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskloop.errors import DataContractError
from riskloop.model import FeatureSpec, matrix
from riskloop.monitoring.frames import MISSING, current_frame, feature_kinds, reference_frame

FSPEC = FeatureSpec(("amount", "channel", "card_count_1h"), {"channel": ("pos", "contactless", "online")})


def raw_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [12.34, 0.1, 999.99, np.nan, 5.0],
            "channel": ["online", "pos", "teleport", None, "contactless"],  # "teleport" is unknown to the model
            "card_count_1h": [0, 3, 1, 2, np.nan],
            "score": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )


def logged_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """What the server logs for these rows: the model matrix (float32) widened to float64."""
    x = matrix(raw, FSPEC)
    log = pd.DataFrame({f"feature_{n}": x[:, j].astype(np.float64) for j, n in enumerate(FSPEC.names)})
    log["score"] = raw["score"].to_numpy()
    return log


def test_reference_and_log_of_the_same_rows_are_identical() -> None:
    raw = raw_rows()
    ref, cur = reference_frame(raw, FSPEC), current_frame(logged_rows(raw), FSPEC)
    pd.testing.assert_frame_equal(ref, cur)
    assert ref["channel"].tolist() == ["online", "pos", MISSING, MISSING, "contactless"]
    assert ref["amount"].iloc[0] == float(np.float32(12.34))  # rounded as the model saw it


def test_feature_kinds_follow_model_order() -> None:
    assert feature_kinds(FSPEC) == (("amount", "card_count_1h"), ("channel",))


def test_codes_outside_the_category_list_break_the_contract() -> None:
    log = logged_rows(raw_rows())
    log.loc[0, "feature_channel"] = 7.0
    with pytest.raises(DataContractError, match=r"outside 0\.\.2"):
        current_frame(log, FSPEC)


def test_missing_columns_are_named() -> None:
    with pytest.raises(DataContractError, match="feature_amount"):
        current_frame(pd.DataFrame({"score": [0.1]}), FSPEC)
    with pytest.raises(DataContractError, match="reference sample"):
        reference_frame(raw_rows().drop(columns=["channel"]), FSPEC)
