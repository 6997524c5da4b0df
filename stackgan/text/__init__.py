from .base import TextEncoder
from .encoders import get_encoder

__all__ = ["TextEncoder", "get_encoder"]
