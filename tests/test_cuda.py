"""CUDA checks (skipped without a GPU): the same numbers on the GPU, and sane half-precision inference."""

import pytest
import torch

from modeling_mobileclip.convert import convert_checkpoint

from conftest import image_inputs, randomize_, text_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def s2_pair():
    open_clip = pytest.importorskip("open_clip")
    reference = randomize_(open_clip.create_model("MobileCLIP-S2", pretrained=None))
    model = convert_checkpoint("mobileclip-s2", reference.state_dict(), verify_reference=False)
    return model, reference


def embeddings(model, input_ids, pixel_values):
    with torch.no_grad():
        return model.get_text_features(input_ids).pooler_output, model.get_image_features(pixel_values).pooler_output


def test_gpu_fp32_matches_open_clip_on_gpu(s2_pair):
    model, reference = s2_pair
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model, reference = model.cuda(), reference.cuda().eval()
    input_ids, pixel_values = text_inputs(4).cuda(), image_inputs(4).cuda()
    text, image = embeddings(model, input_ids, pixel_values)
    with torch.no_grad():
        assert (text - reference.encode_text(input_ids)).abs().max() <= 1e-4
        assert (image - reference.encode_image(pixel_values)).abs().max() <= 1e-4
    cpu_text, cpu_image = embeddings(model.cpu(), input_ids.cpu(), pixel_values.cpu())
    assert (text.cpu() - cpu_text).abs().max() <= 1e-4 and (image.cpu() - cpu_image).abs().max() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_reparameterized_inference(s2_pair, dtype):
    model, _ = s2_pair
    input_ids, pixel_values = text_inputs(4).cuda(), image_inputs(4).cuda()
    model = model.cuda().float()
    text32, image32 = embeddings(model, input_ids, pixel_values)
    model.reparameterize().to(dtype)
    text, image = embeddings(model, input_ids, pixel_values.to(dtype))
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(text.float(), text32).min() > 0.999 and cosine(image.float(), image32).min() > 0.999
