"""Evaluation of generated images: the Shapes attribute checker."""

from .checker import (
    AttributeChecker,
    attribute_accuracy,
    load_or_train_checker,
    pair_accuracy,
    predict,
    score_predictions,
    train_checker,
)

__all__ = [
    "AttributeChecker",
    "attribute_accuracy",
    "load_or_train_checker",
    "pair_accuracy",
    "predict",
    "score_predictions",
    "train_checker",
]
