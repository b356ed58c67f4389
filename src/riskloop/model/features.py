"""What a model is fed: its ordered inputs (:class:`FeatureSpec`) and the one encoding of a frame into them.

Training, serving, monitoring and the model card all build the model matrix here, so a category code or a
float32 rounding means the same thing wherever a score is computed or compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from riskloop.errors import TrainingError
from riskloop.features.compute import REALTIME_FEATURES, STORE_FEATURES

if TYPE_CHECKING:  # a type only: the MLflow model ships this module without the spec's pydantic and yaml
    from riskloop.data.spec import DatasetSpec

RAW_TRANSACTION_FEATURES = ("amount", "distance_from_home_km", "card_age_days", "event_hour")
RAW_CATEGORICAL = ("merchant_category", "channel", "device_type", "country")


@dataclass(frozen=True)
class FeatureSpec:
    """The model's ordered inputs and, for categoricals, their fixed category order."""

    names: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]

    @property
    def types(self) -> list[str]:
        return ["c" if n in self.categories else "q" for n in self.names]

    def to_dict(self) -> list[dict[str, object]]:
        return [
            {
                "name": n,
                "type": "categorical" if n in self.categories else "float",
                **({"categories": list(self.categories[n])} if n in self.categories else {}),
            }
            for n in self.names
        ]

    @classmethod
    def from_dict(cls, items: list[dict[str, object]]) -> FeatureSpec:
        names = tuple(str(i["name"]) for i in items)
        cats: dict[str, tuple[str, ...]] = {
            str(i["name"]): tuple(str(c) for c in i["categories"])  # type: ignore[attr-defined]
            for i in items
            if "categories" in i
        }
        return cls(names, cats)


def feature_spec(spec: DatasetSpec) -> FeatureSpec:
    """The model inputs a dataset spec implies."""
    if spec.features.source == "raw":
        names = spec.features.raw_columns
    else:
        names = (*RAW_TRANSACTION_FEATURES, *RAW_CATEGORICAL, *STORE_FEATURES, *REALTIME_FEATURES)
    cats = {n: c for n, c in spec.categories.items() if n in names}
    return FeatureSpec(tuple(names), cats)


def matrix(df: pd.DataFrame, fspec: FeatureSpec) -> np.ndarray:
    """The model matrix in feature order: categoricals as codes of the fixed order, NaN = missing."""
    cols = []
    for name in fspec.names:
        if name not in df.columns:
            raise TrainingError(
                f"feature {name!r} is missing from the training frame",
                fix="rebuild the training set with the feature service the model expects",
            )
        s = df[name]
        if name in fspec.categories:
            codes = pd.Categorical(s.astype("string").astype(object), categories=list(fspec.categories[name])).codes
            cols.append(np.where(codes < 0, np.nan, codes).astype(np.float32))
        else:
            cols.append(pd.to_numeric(s, errors="coerce").to_numpy(np.float32, na_value=np.nan))
    return np.column_stack(cols) if cols else np.empty((len(df), 0), np.float32)
