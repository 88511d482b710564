"""Class priors: which class balance a model's probabilities assume.

A classifier trained on FERPlus has learned FERPlus's class balance (35 % neutral, 29 % happiness,
under 1 % contempt) along with the faces. ``prior`` says what to do with it:

* ``"dataset"``: the model's own probabilities, that balance included; the most accurate choice on
  data balanced like the training split (and the default of weights that store no class prior);
* ``"balanced"``: logit adjustment, the stored training class frequencies divided out
  (``softmax(logits - log prior)``), as if every class were equally common;
* ``"balanced:TAU"``, TAU from 0 to 1: that share of the adjustment (``softmax(logits - TAU log prior)``),
  between the two: ``balanced:0`` is ``dataset``, ``balanced:1`` is ``balanced``. ``balanced:0.5`` is
  recognition's default (:func:`default_prior`): on FERPlus validation it costs 0.9 points of accuracy
  where ``balanced`` costs 9.9, and gains half of its mean class accuracy (``results/prior_choice.md``);
* a mapping ``{class: weight}`` naming every class: each probability is multiplied by its weight
  and the result renormalised (``softmax(logits + log weight)``); ``"balanced"`` is the mapping
  ``{c: 1 / prior(c)}``.

Strings for the command line and the HTTP API: ``dataset``, ``balanced``, ``balanced:0.5``,
``neutral=1,happiness=0.5,...`` or a JSON object.
"""
from __future__ import annotations

import json
import math

import numpy as np

from .card import Card

NAMED = ("dataset", "balanced")
PARTIAL = "balanced:"          # "balanced:TAU": TAU of the balanced adjustment
# What recognition uses unless told otherwise, for weights that store their training class prior:
# half the balanced adjustment (results/prior_choice.md; the decision is argued in docs/guides/pipeline.md).
DEFAULT_PRIOR = "balanced:0.5"


def default_prior(card: Card) -> str:
    """The prior recognition uses unless told: :data:`DEFAULT_PRIOR` for weights that store their
    training class frequencies, ``"dataset"`` for weights that do not (nothing to divide out)."""
    return DEFAULT_PRIOR if card.class_prior else "dataset"


def offered_priors(card: Card) -> list[str]:
    """The named priors these weights can use (the page's selector and ``/v1/model``)."""
    return ["dataset", DEFAULT_PRIOR, "balanced"] if card.class_prior else ["dataset"]


def partial_share(text: str) -> float | None:
    """TAU of ``"balanced:TAU"`` (a number from 0 to 1), or None when ``text`` is not of that form."""
    if not text.startswith(PARTIAL):
        return None
    tail = text[len(PARTIAL):].strip()
    try:
        tau = float(tail)
    except ValueError:
        tau = float("nan")
    if not 0.0 <= tau <= 1.0:                       # nan fails too
        raise PriorError(f"prior {text!r}: expected balanced:TAU with TAU a number from 0 (dataset) to 1 "
                         "(balanced), e.g. balanced:0.5")
    return tau


class PriorError(ValueError):
    """An unusable ``prior`` value; the message lists what would be accepted."""


def parse_prior(text: str) -> str | dict[str, float]:
    """``dataset``, ``balanced``, ``balanced:TAU``, ``class=weight,class=weight,...`` or a JSON object ->
    prior value (``balanced:TAU`` with TAU written as ``%g`` writes it)."""
    text = str(text).strip()
    if text in NAMED:
        return text
    tau = partial_share(text)
    if tau is not None:
        return f"{PARTIAL}{tau:g}"
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as e:
            raise PriorError(f"prior {text!r} is not a JSON object ({e})") from None
        if not isinstance(value, dict):
            raise PriorError(f"prior {text!r} is not a JSON object")
        return value
    pairs = [p for p in text.split(",") if p.strip()]
    if not pairs or any("=" not in p for p in pairs):
        raise PriorError(f"prior {text!r}: expected 'dataset', 'balanced', 'balanced:TAU' or class=weight pairs "
                         "separated by commas")
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, weight = pair.partition("=")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise PriorError(f"prior {text!r}: weight {weight!r} of class {name.strip()!r} is not a number") from None
    return out


def log_weights(prior, card: Card) -> np.ndarray | None:
    """What ``prior`` adds to the logits (float32, card class order), or None for ``"dataset"``."""
    if prior is None or (isinstance(prior, str) and prior == "dataset"):
        return None
    if isinstance(prior, str):
        tau = 1.0 if prior == "balanced" else partial_share(prior)
        if tau is None:
            raise PriorError(f"unknown prior {prior!r}; expected 'dataset', 'balanced', 'balanced:TAU' (TAU from "
                             f"0 to 1) or a mapping of every class of the model {card.class_names} to a positive weight")
        if tau == 0.0:
            return None
        return (-tau * np.log(_stored_frequencies(card))).astype(np.float32)
    if not isinstance(prior, dict):
        raise PriorError(f"prior must be 'dataset', 'balanced' or a mapping of class to weight, "
                         f"got {type(prior).__name__}")
    return np.log(_mapping_weights(prior, card)).astype(np.float32)


def _stored_frequencies(card: Card) -> np.ndarray:
    if not card.class_prior:
        raise PriorError(f"{card.source or 'these weights'}: the weights store no training class prior, so "
                         "prior='balanced' is not available (package the run with `litefer package --data ROOT`, "
                         "or pass a mapping of class to weight)")
    freq = np.array([float(card.class_prior[c]) for c in card.class_names], np.float64)
    if (freq <= 0).any():
        zero = [c for c, f in zip(card.class_names, freq) if f <= 0]
        raise PriorError(f"{card.source}: the stored class prior gives class(es) {zero} no training examples, "
                         "so prior='balanced' cannot divide it out; pass a mapping of class to weight")
    return freq / freq.sum()


def _mapping_weights(prior: dict, card: Card) -> np.ndarray:
    names = card.class_names
    unknown = sorted(str(k) for k in prior if k not in names)
    missing = [c for c in names if c not in prior]
    if unknown or missing:
        what = "; ".join(part for part in (f"unknown class(es) {unknown}" if unknown else "",
                                           f"missing class(es) {missing}" if missing else "") if part)
        raise PriorError(f"prior mapping: {what}; it must give a weight to each of the model's classes {names}")
    bad = {c: prior[c] for c in names if isinstance(prior[c], bool) or not isinstance(prior[c], (int, float))
           or not math.isfinite(prior[c]) or prior[c] <= 0}
    if bad:
        raise PriorError(f"prior mapping: weights must be positive finite numbers, got {bad} "
                         f"(classes of the model: {names})")
    return np.array([float(prior[c]) for c in names], np.float64)


def describe(prior) -> str | dict[str, float]:
    """The prior as echoed in results: its name, or the mapping in float form."""
    if prior is None:
        return "dataset"
    return prior if isinstance(prior, str) else {str(k): float(v) for k, v in prior.items()}
