from .encoders import TextEncoder, get_encoder

__all__ = ["TextEncoder", "get_encoder"]
