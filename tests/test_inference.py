"""optimize_for_inference: fused, eval mode, the requested precision, and outputs close to float32's."""

import copy

import pytest
import torch
import torch.nn.functional as F

from modeling_mobileclip import MobileCLIPModel
from modeling_mobileclip.inference import fastest_dtype, native_bfloat16, optimize_for_inference

from conftest import image_inputs, randomize_, text_inputs, tiny_config


@pytest.mark.parametrize("text_tower", ["transformer", "mct"])
def test_bfloat16_inference_agrees_with_float32(text_tower):
    reference = randomize_(MobileCLIPModel(tiny_config(text_tower=text_tower)))
    pixel_values, input_ids = image_inputs(3, 64), text_inputs(3, 16)
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values, input_ids=input_ids)
    fast = optimize_for_inference(copy.deepcopy(reference), dtype=torch.bfloat16)
    assert fast.config.vision_config.reparameterized and not fast.training and fast.dtype == torch.bfloat16
    fp32 = optimize_for_inference(copy.deepcopy(reference), dtype=torch.float32)
    with torch.no_grad():
        exact = fp32(pixel_values=pixel_values, input_ids=input_ids)
        half = fast(pixel_values=pixel_values.bfloat16(), input_ids=input_ids)
    # Fusion is exact; bfloat16 keeps ~3 significant digits.
    assert (exact.image_embeds - expected.image_embeds).abs().max() < 1e-5
    assert (exact.text_embeds - expected.text_embeds).abs().max() < 1e-5
    for name in ("image_embeds", "text_embeds"):
        cosine = F.cosine_similarity(getattr(half, name).float(), getattr(exact, name), dim=-1)
        assert cosine.min() > 0.99, (name, cosine)


def test_auto_precision_follows_the_hardware():
    assert fastest_dtype("cpu") == (torch.bfloat16 if native_bfloat16("cpu") else torch.float32)
    model = optimize_for_inference(MobileCLIPModel(tiny_config()))
    assert model.dtype == fastest_dtype("cpu")
