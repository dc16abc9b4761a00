"""PyTorch definitions of the UniCure model (training side; imports torch)."""

from unicure_rt.train.models.backbone import Backbone
from unicure_rt.train.models.config import UniCureConfig
from unicure_rt.train.models.flexpert import Adaptor, FlexPert
from unicure_rt.train.models.unicure import UniCure, add_lora, load_native, merge_lora, save_native

__all__ = [
    "Adaptor",
    "Backbone",
    "FlexPert",
    "UniCure",
    "UniCureConfig",
    "add_lora",
    "load_native",
    "merge_lora",
    "save_native",
]
