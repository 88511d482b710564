"""litefer: lightweight facial expression recognition (Liang et al., IET Image Processing 2023)."""
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]
