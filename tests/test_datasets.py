"""Tests of the bundled breast cancer data against scikit-learn's copy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn.datasets

from confidential_nb.datasets import load_breast_cancer


@pytest.fixture(scope="module")
def breast_cancer() -> pd.DataFrame:
    return load_breast_cancer()


def test_load_breast_cancer_shape(breast_cancer: pd.DataFrame) -> None:
    assert breast_cancer.shape == (569, 31)


def test_load_breast_cancer_no_missing_values(breast_cancer: pd.DataFrame) -> None:
    assert not breast_cancer.isna().any().any()


def test_load_breast_cancer_dtypes(breast_cancer: pd.DataFrame) -> None:
    features = breast_cancer.drop(columns="target")

    assert (features.dtypes == np.float64).all()
    assert breast_cancer["target"].dtype == np.int64


def test_load_breast_cancer_class_counts(breast_cancer: pd.DataFrame) -> None:
    counts = breast_cancer["target"].value_counts()

    assert counts[1] == 212
    assert counts[0] == 357
    assert set(counts.index) == {0, 1}


def test_load_breast_cancer_column_names_match_sklearn(breast_cancer: pd.DataFrame) -> None:
    reference = sklearn.datasets.load_breast_cancer()

    assert list(breast_cancer.columns) == [*reference.feature_names, "target"]


def test_load_breast_cancer_values_equal_sklearn(breast_cancer: pd.DataFrame) -> None:
    reference = sklearn.datasets.load_breast_cancer()
    features = breast_cancer.drop(columns="target").to_numpy()

    # Exact equality: the CSV stores each float's shortest round-trip repr.
    np.testing.assert_array_equal(features, reference.data)


def test_load_breast_cancer_label_is_flipped(breast_cancer: pd.DataFrame) -> None:
    reference = sklearn.datasets.load_breast_cancer()
    assert list(reference.target_names) == ["malignant", "benign"]

    # scikit-learn: 0 = malignant, 1 = benign; here 1 = malignant.
    np.testing.assert_array_equal(breast_cancer["target"].to_numpy(), 1 - reference.target)


def test_load_breast_cancer_returns_fresh_frame() -> None:
    first = load_breast_cancer()
    first.iloc[0, 0] = -1.0

    assert load_breast_cancer().iloc[0, 0] != -1.0
