"""Datasets bundled with the package, loaded from its package data."""

from __future__ import annotations

import importlib.resources
from typing import Any

import pandas as pd

BREAST_CANCER_FILE = "breast_cancer.csv"


def _read_csv_options() -> dict[str, Any]:
    # pandas 3 parses floats exactly by default and deprecates float_precision,
    # while the default parser of pandas 2 does not guarantee exact round trips.
    major_version = int(pd.__version__.split(".", 1)[0])
    if major_version >= 3:
        return {}
    return {"float_precision": "round_trip"}


def load_breast_cancer() -> pd.DataFrame:
    """Load the Wisconsin Diagnostic Breast Cancer data as a DataFrame.

    Returns 569 rows: 30 float64 feature columns named as scikit-learn names
    them ("mean radius" ... "worst fractal dimension") and an int64 ``target``
    column with 1 = malignant and 0 = benign (212 malignant, 357 benign).
    This coding is the reverse of ``sklearn.datasets.load_breast_cancer``.
    Source: UCI Machine Learning Repository, Wolberg, Street and Mangasarian
    (1995), DOI 10.24432/C5DW2B, licence CC BY 4.0. See ``data/README.md``.
    """
    resource = importlib.resources.files("confidential_nb") / "data" / BREAST_CANCER_FILE
    with resource.open("r", encoding="utf-8") as stream:
        return pd.read_csv(stream, **_read_csv_options())
