"""The Adult census income data set: its features, their types and their domains.

Plain Python, no Django: the training script in ``research/`` imports this module too, so
training and serving can never disagree about a column name or a category spelling.

The category domains are the ones listed in ``adult.names``. A value outside its domain is a
client error (a typo, a wrong column); a value inside the domain that a particular model
never saw in training is handled by the model's preprocessing (see ``preprocessing.py``).
"""

from __future__ import annotations

from typing import Final

LABEL: Final = "income"
NEGATIVE_LABEL: Final = "<=50K"
POSITIVE_LABEL: Final = ">50K"
CLASSES: Final = (NEGATIVE_LABEL, POSITIVE_LABEL)

# Column order of adult.data / adult.test, without the label.
NUMERIC_FEATURES: Final = (
    "age",
    "fnlwgt",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
)

CATEGORY_DOMAINS: Final[dict[str, tuple[str, ...]]] = {
    "workclass": (
        "Private",
        "Self-emp-not-inc",
        "Self-emp-inc",
        "Federal-gov",
        "Local-gov",
        "State-gov",
        "Without-pay",
        "Never-worked",
    ),
    "education": (
        "Bachelors",
        "Some-college",
        "11th",
        "HS-grad",
        "Prof-school",
        "Assoc-acdm",
        "Assoc-voc",
        "9th",
        "7th-8th",
        "12th",
        "Masters",
        "1st-4th",
        "10th",
        "Doctorate",
        "5th-6th",
        "Preschool",
    ),
    "marital-status": (
        "Married-civ-spouse",
        "Divorced",
        "Never-married",
        "Separated",
        "Widowed",
        "Married-spouse-absent",
        "Married-AF-spouse",
    ),
    "occupation": (
        "Tech-support",
        "Craft-repair",
        "Other-service",
        "Sales",
        "Exec-managerial",
        "Prof-specialty",
        "Handlers-cleaners",
        "Machine-op-inspct",
        "Adm-clerical",
        "Farming-fishing",
        "Transport-moving",
        "Priv-house-serv",
        "Protective-serv",
        "Armed-Forces",
    ),
    "relationship": (
        "Wife",
        "Own-child",
        "Husband",
        "Not-in-family",
        "Other-relative",
        "Unmarried",
    ),
    "race": ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"),
    "sex": ("Female", "Male"),
    "native-country": (
        "United-States",
        "Cambodia",
        "England",
        "Puerto-Rico",
        "Canada",
        "Germany",
        "Outlying-US(Guam-USVI-etc)",
        "India",
        "Japan",
        "Greece",
        "South",
        "China",
        "Cuba",
        "Iran",
        "Honduras",
        "Philippines",
        "Italy",
        "Poland",
        "Jamaica",
        "Vietnam",
        "Mexico",
        "Portugal",
        "Ireland",
        "France",
        "Dominican-Republic",
        "Laos",
        "Ecuador",
        "Taiwan",
        "Haiti",
        "Columbia",
        "Hungary",
        "Guatemala",
        "Nicaragua",
        "Scotland",
        "Thailand",
        "Yugoslavia",
        "El-Salvador",
        "Trinadad&Tobago",
        "Peru",
        "Hong",
        "Holand-Netherlands",
    ),
}

# The order of the columns in the raw files (and so in a model's feature matrix).
FEATURES: Final = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
)
COLUMNS: Final = (*FEATURES, LABEL)

# The raw files write a missing value as "?".
MISSING_MARKER: Final = "?"


def normalise_label(value: str) -> str:
    """``adult.test`` writes labels with a trailing full stop (">50K."); the rest don't."""
    return value.strip().rstrip(".")
