"""Write confidential_nb/data/breast_cancer.csv from scikit-learn's copy of the WDBC data.

Run once from the repository root: ``python3 scripts/make_breast_cancer_csv.py``.
The file keeps scikit-learn's 30 feature names and adds an int ``target`` column
with 1 = malignant and 0 = benign, the reverse of scikit-learn's coding
(where 1 = benign). Floats are written with their shortest repr, so reading the
file with ``confidential_nb.datasets.load_breast_cancer`` gives back the exact
float64 values, which the script checks after writing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from confidential_nb.datasets import load_breast_cancer as load_breast_cancer_csv

OUTPUT_PATH = Path(__file__).resolve().parent.parent / "confidential_nb" / "data" / "breast_cancer.csv"


def build_frame() -> pd.DataFrame:
    """Return the 569 x 31 frame: the features, then ``target`` (1 = malignant)."""
    bunch = load_breast_cancer(as_frame=True)
    features = bunch.data.astype(np.float64)

    # scikit-learn codes malignant as 0 and benign as 1; flip it so that the
    # positive class is the finding a screening model looks for.
    malignant_index = list(bunch.target_names).index("malignant")
    target = (bunch.target.to_numpy() == malignant_index).astype(np.int64)

    frame = features.copy()
    frame["target"] = target
    return frame


def check_round_trip(frame: pd.DataFrame) -> None:
    """Raise AssertionError unless the packaged loader reads back identical values."""
    read_back = load_breast_cancer_csv()
    pd.testing.assert_frame_equal(read_back, frame, check_exact=True)


def main() -> int:
    frame = build_frame()

    OUTPUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(OUTPUT_PATH, index=False, lineterminator="\n")

    check_round_trip(frame)
    malignant = int(frame["target"].sum())
    sys.stdout.write(f"wrote {OUTPUT_PATH} ({len(frame)} rows, {malignant} malignant)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
