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
from transformers.models.auto import image_processing_auto as _image_processing_auto

from .configuration_mobileclip import (
    VARIANTS,
    MobileCLIPConfig,
    MobileCLIPTextConfig,
    MobileCLIPVisionConfig,
    get_variant,
    normalize_variant,
)
from .image_processing_mobileclip import MobileCLIPImageProcessor
from .image_processing_mobileclip_fast import MobileCLIPImageProcessorFast
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
    # PIL (bit-exact with Apple's and open_clip's transforms) and torchvision (the same transform on tensors, within
    # 1/255 for bilinear, 8/255 for bicubic) backends; `backend="torchvision"` picks the latter.
    AutoImageProcessor.register(
        _config,
        image_processor_classes={"pil": MobileCLIPImageProcessor, "torchvision": MobileCLIPImageProcessorFast},
        exist_ok=True,
    )
    AutoProcessor.register(_config, MobileCLIPProcessor, exist_ok=True)
AutoModel.register(MobileCLIPConfig, MobileCLIPModel, exist_ok=True)
AutoModel.register(MobileCLIPTextConfig, MobileCLIPTextModelWithProjection, exist_ok=True)
AutoModel.register(MobileCLIPVisionConfig, MobileCLIPVisionModelWithProjection, exist_ok=True)
AutoModelForZeroShotImageClassification.register(MobileCLIPConfig, MobileCLIPModel, exist_ok=True)
# Without a `backend`, transformers picks torchvision when it is installed; MobileCLIP keeps the bit-exact PIL
# processor as its default, as transformers does for the processors in this list (its Lanczos ones).
if "MobileCLIPImageProcessor" not in _image_processing_auto.DEFAULT_TO_PIL_BACKEND_IMAGE_PROCESSORS:
    _image_processing_auto.DEFAULT_TO_PIL_BACKEND_IMAGE_PROCESSORS.append("MobileCLIPImageProcessor")

# Remote code: save_pretrained writes `auto_map` and copies the defining modules next to the weights.
for _config in (MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig):
    _config.register_for_auto_class()
for _model in (MobileCLIPModel, MobileCLIPTextModelWithProjection, MobileCLIPVisionModelWithProjection):
    _model.register_for_auto_class("AutoModel")
MobileCLIPTokenizer.register_for_auto_class("AutoTokenizer")
MobileCLIPImageProcessor.register_for_auto_class("AutoImageProcessor")
MobileCLIPImageProcessorFast.register_for_auto_class("AutoImageProcessor")
MobileCLIPProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "VARIANTS",
    "MobileCLIPConfig",
    "MobileCLIPImageProcessor",
    "MobileCLIPImageProcessorFast",
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
