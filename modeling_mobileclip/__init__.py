"""MobileCLIP and MobileCLIP2 for Hugging Face transformers.

Importing the package registers every class with the Auto classes (AutoConfig, AutoModel,
AutoModelForZeroShotImageClassification, AutoTokenizer, AutoImageProcessor, AutoProcessor), and marks them for
`auto_map`, so a saved folder or Hub repo also loads with `trust_remote_code=True` where this package is not
installed.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_mobileclip import (
    VARIANTS,
    MobileCLIPConfig,
    MobileCLIPTextConfig,
    MobileCLIPVisionConfig,
    get_variant,
    normalize_variant,
)
from .image_processing_mobileclip import MobileCLIPImageProcessor
from .loading import image_preprocessing, load_model, load_model_and_processor, load_processor, saved_image_processor
from .modeling_mobileclip import (
    MobileCLIPModel,
    MobileCLIPOutput,
    MobileCLIPPreTrainedModel,
    MobileCLIPTextModel,
    MobileCLIPTextModelWithProjection,
    MobileCLIPVisionModelWithProjection,
)
from .processing_mobileclip import MobileCLIPProcessor
from .tokenization_mobileclip import MobileCLIPTokenizer

for _config in (MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoTokenizer.register(_config, tokenizer_class=MobileCLIPTokenizer, exist_ok=True)
    # PIL backend only (bit-exact with open_clip). No torchvision class is registered: a user asking for the fast
    # processor is told there is none instead of silently getting the PIL one.
    AutoImageProcessor.register(_config, image_processor_classes={"pil": MobileCLIPImageProcessor}, exist_ok=True)
    AutoProcessor.register(_config, MobileCLIPProcessor, exist_ok=True)
AutoModel.register(MobileCLIPConfig, MobileCLIPModel, exist_ok=True)
AutoModel.register(MobileCLIPTextConfig, MobileCLIPTextModelWithProjection, exist_ok=True)
AutoModel.register(MobileCLIPVisionConfig, MobileCLIPVisionModelWithProjection, exist_ok=True)
AutoModelForZeroShotImageClassification.register(MobileCLIPConfig, MobileCLIPModel, exist_ok=True)

# Remote code: save_pretrained writes `auto_map` and copies the defining modules next to the weights.
for _config in (MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig):
    _config.register_for_auto_class()
for _model in (MobileCLIPModel, MobileCLIPTextModelWithProjection, MobileCLIPVisionModelWithProjection):
    _model.register_for_auto_class("AutoModel")
MobileCLIPTokenizer.register_for_auto_class("AutoTokenizer")
MobileCLIPImageProcessor.register_for_auto_class("AutoImageProcessor")
MobileCLIPProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "VARIANTS",
    "MobileCLIPConfig",
    "MobileCLIPImageProcessor",
    "MobileCLIPModel",
    "MobileCLIPOutput",
    "MobileCLIPPreTrainedModel",
    "MobileCLIPProcessor",
    "MobileCLIPTextConfig",
    "MobileCLIPTextModel",
    "MobileCLIPTextModelWithProjection",
    "MobileCLIPTokenizer",
    "MobileCLIPVisionConfig",
    "MobileCLIPVisionModelWithProjection",
    "get_variant",
    "image_preprocessing",
    "load_model",
    "load_model_and_processor",
    "load_processor",
    "normalize_variant",
    "saved_image_processor",
]
