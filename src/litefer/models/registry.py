"""Named model variants and ``create_model`` (timm-style): each name maps to a spec and defaults."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from torch import nn

from .mobilenetv3 import LARGE, MobileNetV3, NetworkSpec, reduce_tail, with_activation, with_attention


@dataclass(frozen=True)
class ModelEntry:
    name: str
    spec: NetworkSpec
    description: str
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, spec: NetworkSpec, description: str, **defaults) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, spec, description, defaults)


def list_models() -> list[str]:
    """Names accepted by ``create_model``, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = [n for n in _REGISTRY if name.lower() in n or n in name.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} Available: {', '.join(list_models())}") from None


_ALLOWED = set(inspect.signature(MobileNetV3.__init__).parameters) - {"self", "spec"}


def create_model(name: str, num_classes: int = 8, **overrides) -> nn.Module:
    """Build a registered model: ``create_model("litefer_cpsca", num_classes=7, in_chans=1)``.

    Overrides: ``in_chans`` (1 or 3), ``dropout``, ``attention_gate`` (``sigmoid``/``hardsigmoid``
    for the CA family). Unknown keyword arguments are an error, not ignored.
    """
    entry = get_model_entry(name)
    unknown = set(overrides) - _ALLOWED
    if unknown:
        raise TypeError(f"create_model({name!r}) got unknown argument(s) {sorted(unknown)}; "
                        f"allowed: {sorted(_ALLOWED)}")
    kwargs = {**entry.defaults, **overrides, "num_classes": num_classes}
    model = MobileNetV3(entry.spec, **kwargs)
    model.model_name = name
    return model


# --- The variants of the paper (Tables 2 and 5), each an edit of the MobileNetV3-Large table. ---
_REDUCED = reduce_tail(LARGE)
_REDUCED_HS = with_activation(_REDUCED, "HS")
# The improved network keeps SE in rows 4-6, puts CA in the high-level rows 11-15 and (Table 5)
# varies the attention of the middle rows 9-10.
_IMPROVED_BASE = with_attention(_REDUCED_HS, range(11, 16), "ca")
MIDDLE_ROWS = (9, 10)

register_model("mobilenetv3_large", LARGE,
               "MobileNetV3-Large as in torchvision (ReLU early, SE); Table 2 row 'MobileNetV3'",
               dropout=0.2)
register_model("mobilenetv3_large_reduced", _REDUCED,
               "reduced tail (channels of the last blocks halved); Table 2 'Modify channels'", dropout=0.2)
register_model("mobilenetv3_large_reduced_hswish", _REDUCED_HS,
               "reduced tail + h-swish in every block; Table 2 'Modify channels + H-Swish'", dropout=0.2)
register_model("litefer_baseline", _IMPROVED_BASE,
               "improved network without attention in the middle rows 9-10; Table 5 'Baseline'", dropout=0.4)
for _kind in ("ca", "maxca", "cpsca"):
    register_model(f"litefer_{_kind}", with_attention(_IMPROVED_BASE, MIDDLE_ROWS, _kind),
                   f"improved network with {_kind.upper()} in the middle rows 9-10; Table 5 '{_kind.upper()}'"
                   + (" (the paper's network)" if _kind == "cpsca" else ""), dropout=0.4)
