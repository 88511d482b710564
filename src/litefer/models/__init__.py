"""Networks: the MobileNetV3 block table, its attention modules and the model registry."""
from .attention import CoordAttention, SqueezeExcite
from .mobilenetv3 import LARGE, BlockSpec, InvertedResidual, MobileNetV3, NetworkSpec
from .registry import create_model, get_model_entry, list_models, register_model

__all__ = ["BlockSpec", "CoordAttention", "InvertedResidual", "LARGE", "MobileNetV3", "NetworkSpec",
           "SqueezeExcite", "create_model", "get_model_entry", "list_models", "register_model"]
