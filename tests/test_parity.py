"""Numerical parity with the reference implementations, full-size variants, converted random weights.

Each reference model gets random BatchNorm statistics and layer scales (so every branch matters), its state dict is
converted with `convert_checkpoint`, and text and image embeddings must agree to 1e-5 (fp32) before and after
re-parameterisation.
"""

import pytest
import torch

from modeling_mobileclip.configuration_mobileclip import get_variant
from modeling_mobileclip.convert import convert_checkpoint

from conftest import image_inputs, randomize_, text_inputs

ATOL = 1e-5


def assert_embeddings_match(model, encode_text, encode_image, image_size: int, n_images: int = 2):
    input_ids, pixel_values = text_inputs(batch=3), image_inputs(batch=n_images, size=image_size)
    with torch.no_grad():
        expected_text, expected_image = encode_text(input_ids), encode_image(pixel_values)
        for form in ("train-time", "reparameterized"):
            text = model.get_text_features(input_ids).pooler_output
            image = model.get_image_features(pixel_values).pooler_output
            assert (text - expected_text).abs().max() <= ATOL, form
            assert (image - expected_image).abs().max() <= ATOL, form
            model.reparameterize()


@pytest.mark.parametrize("name", ["s0", "s1", "s2", "b"])
def test_apple_v1_parity(name):
    """v1 MobileCLIP against Apple's own modules (incl. S0's MCt text tower and B's ViT with stem padding 1)."""
    mobileclip = pytest.importorskip("mobileclip")
    reference = mobileclip.create_model_and_transforms(f"mobileclip_{name}", pretrained=None, reparameterize=False)[0]
    randomize_(reference)
    model = convert_checkpoint(f"mobileclip-{name}", reference.state_dict(), verify_reference=False)
    size = get_variant(f"mobileclip-{name}")["vision"]["image_size"]
    assert_embeddings_match(model, reference.encode_text, reference.encode_image, size)


@pytest.mark.parametrize(
    "variant, open_clip_name, n_images",
    [
        ("mobileclip-s1", "MobileCLIP-S1", 2),
        ("mobileclip-s2", "MobileCLIP-S2", 2),
        ("mobileclip2-s0", "MobileCLIP2-S0", 2),
        ("mobileclip2-s2", "MobileCLIP2-S2", 2),
        ("mobileclip2-b", "MobileCLIP2-B", 2),
        ("mobileclip2-s3", "MobileCLIP2-S3", 1),
        ("mobileclip2-s4", "MobileCLIP2-S4", 1),
        ("mobileclip2-l14", "MobileCLIP2-L-14", 1),
    ],
)
def test_open_clip_parity(variant, open_clip_name, n_images):
    open_clip = pytest.importorskip("open_clip")
    reference = randomize_(open_clip.create_model(open_clip_name, pretrained=None))
    # The checkpoint as open_clip's training writes it: wrapped, with DistributedDataParallel's prefix.
    checkpoint = {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}
    model = convert_checkpoint(variant, checkpoint, verify_reference=False)
    size = get_variant(variant)["vision"]["image_size"]
    assert_embeddings_match(model, reference.encode_text, reference.encode_image, size, n_images)


@pytest.mark.parametrize("variant", ["mobileclip2-s0", "mobileclip-s1", "mobileclip2-b"])
def test_timm_image_tower_parity(variant):
    """timm image-tower checkpoints (head = CLIP projection) convert to the vision model with projection."""
    import timm

    vision = get_variant(variant)["vision"]
    reference = randomize_(timm.create_model(vision["architecture"], num_classes=vision["projection_dim"]))
    model = convert_checkpoint(variant, reference.state_dict())
    pixel_values = image_inputs(size=vision["image_size"])
    with torch.no_grad():
        assert (model(pixel_values).image_embeds - reference(pixel_values)).abs().max() <= ATOL


def test_v1_b_differs_from_timm_definition():
    """The stem padding / LayerNorm eps switch is load-bearing: timm's defaults give other outputs for v1 B weights."""
    mobileclip = pytest.importorskip("mobileclip")
    reference = randomize_(
        mobileclip.create_model_and_transforms("mobileclip_b", pretrained=None, reparameterize=False)[0]
    )
    from modeling_mobileclip.configuration_mobileclip import MobileCLIPConfig
    from modeling_mobileclip.convert import convert_state_dict, load_strict
    from modeling_mobileclip.modeling_mobileclip import MobileCLIPModel

    config = MobileCLIPConfig.from_variant("mobileclip2-b")  # timm's vit_base_mci_224, causal 512-wide text
    model = MobileCLIPModel(config).eval()
    load_strict(model, convert_state_dict(reference.state_dict(), config))
    pixel_values = image_inputs(size=224)
    with torch.no_grad():
        diff = (model.get_image_features(pixel_values).pooler_output - reference.encode_image(pixel_values)).abs().max()
    assert diff > 1e-2
