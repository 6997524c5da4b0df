from .conditioning import ConditioningAugmentation
from .output import GeneratorOutput
from .stage1 import Stage1Discriminator, Stage1Generator
from .stage2 import Stage2Discriminator, Stage2Generator

__all__ = [
    "ConditioningAugmentation",
    "GeneratorOutput",
    "Stage1Generator",
    "Stage1Discriminator",
    "Stage2Generator",
    "Stage2Discriminator",
]
