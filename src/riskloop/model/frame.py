"""The columns of a training set that every reader of a model agrees on.

Training writes them, evaluation, the model card and the drift reference read them: the label as known at
the cutoff and the split a row belongs to.
"""

from __future__ import annotations

LABEL = "label"
SPLIT = "split"
# rows younger than the label maturity at the cutoff: their labels are not known yet, so no model learns or is
# judged on them; they are kept (features only) as the newest picture of the inputs, the drift reference
UNLABELLED = "unlabelled"
LABELLED_SPLITS = ("train", "validation", "test")
