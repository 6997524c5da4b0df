from ..signals import TrainingStopped
from .loop import train

__all__ = ["TrainingStopped", "train"]
