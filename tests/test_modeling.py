"""Tiny-config tests of the model classes: outputs, re-parameterisation, save/load, towers, errors."""

import pytest
import torch

from modeling_mobileclip import (
    MobileCLIPConfig,
    MobileCLIPModel,
    MobileCLIPTextModelWithProjection,
    MobileCLIPVisionModelWithProjection,
)
from modeling_mobileclip.modeling_mobileclip import (
    MAX_LOGIT_SCALE,
    MobileCLIPMobileOneBlock,
    MobileCLIPRepMixer,
    MobileCLIPRepMixerBlock,
)

from conftest import image_inputs, randomize_, text_inputs, tiny_config

TOWERS = [("mct", "fastvit_mci0"), ("transformer", "fastvit_mci0"), ("transformer", "vit_large_patch14_clip_224")]


def build(text_tower="mct", architecture="fastvit_mci0", causal=False, seed=0):
    torch.manual_seed(seed)
    return randomize_(MobileCLIPModel(tiny_config(text_tower, architecture, causal)), seed)


def features(model, input_ids, pixel_values):
    with torch.no_grad():
        return (model.get_text_features(input_ids).pooler_output, model.get_image_features(pixel_values).pooler_output)


@pytest.mark.parametrize("text_tower, architecture", TOWERS)
def test_forward_outputs(text_tower, architecture):
    model = build(text_tower, architecture)
    input_ids, pixel_values = text_inputs(3, 16), image_inputs(2, model.config.vision_config.image_size)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
    text, image = features(model, input_ids, pixel_values)
    assert out.logits_per_image.shape == (2, 3) and out.logits_per_text.shape == (3, 2)
    torch.testing.assert_close(out.text_embeds, torch.nn.functional.normalize(text, dim=-1))
    torch.testing.assert_close(out.image_embeds, torch.nn.functional.normalize(image, dim=-1))
    assert MAX_LOGIT_SCALE == 100  # CLIP's clamp of the learned temperature
    scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    torch.testing.assert_close(out.logits_per_image, scale * out.image_embeds @ out.text_embeds.T)
    assert isinstance(model(input_ids=input_ids, pixel_values=pixel_values, return_dict=False), tuple)


def test_single_modality_forward():
    model = build()
    pixel_values = image_inputs(2, 64)
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    assert out.logits_per_image is None and out.text_embeds is None and out.image_embeds.shape == (2, 24)
    with torch.no_grad():
        assert model(input_ids=text_inputs(2, 16)).text_embeds.shape == (2, 24)


def test_loss_matches_manual_computation():
    model = build()
    input_ids, pixel_values = text_inputs(3, 16), image_inputs(3, 64)
    out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    labels = torch.arange(3)
    expected = (
        torch.nn.functional.cross_entropy(out.logits_per_image, labels)
        + torch.nn.functional.cross_entropy(out.logits_per_text, labels)
    ) / 2
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_text_padding_is_done_in_the_model():
    """Non-causal towers attend to padding: any padding a caller chose must give the 77-with-zeros embedding."""
    model = build("transformer")
    full = text_inputs(2, 16)
    short = full[:, : int((full > 0).sum(1).max())]
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(short).pooler_output, model.get_text_features(full).pooler_output
        )
        padded_with_eot = torch.where(full == 0, torch.full_like(full, 1), full)
        assert not torch.allclose(
            model.get_text_features(padded_with_eot).pooler_output, model.get_text_features(full).pooler_output
        ), "a non-causal tower must see its padding"


def test_causal_tower_ignores_tokens_after_eot():
    model = build("transformer", causal=True)
    ids = text_inputs(2, 16)
    changed = torch.where(ids == 0, torch.full_like(ids, 5), ids)
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(changed).pooler_output, model.get_text_features(ids).pooler_output
        )


@pytest.mark.parametrize("use_conv", [False, True])
def test_mobileone_block_reparameterization_is_exact(use_conv):
    block = randomize_(MobileCLIPMobileOneBlock(8, (1, 11), use_conv=use_conv))
    x = torch.randn(2, 8, 1, 20)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        block.reparameterize()  # idempotent
        assert (block(x) - expected).abs().max() <= 1e-5
    assert [name for name, _ in block.named_children()] == ["reparam_conv"]


def test_repmixer_reparameterization_is_exact():
    mixer = randomize_(MobileCLIPRepMixer(8, (1, 11)))
    x = torch.randn(2, 8, 1, 20)
    with torch.no_grad():
        expected = mixer(x)
        mixer.reparameterize()
        assert (mixer(x) - expected).abs().max() <= 1e-5
    assert set(dict(mixer.named_parameters())) == {"reparam_conv.weight", "reparam_conv.bias"}


def test_repmixer_block_reparameterization_is_exact():
    block = randomize_(MobileCLIPRepMixerBlock(tiny_config("mct").text_config))
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        expected = block(x)
        block.token_mixer.reparameterize()
        assert (block(x) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("text_tower, architecture", TOWERS)
def test_model_reparameterization_exact_idempotent_and_saved(text_tower, architecture, tmp_path):
    model = build(text_tower, architecture)
    inputs = text_inputs(3, 16), image_inputs(2, model.config.vision_config.image_size)
    expected = features(model, *inputs)
    n_params = len(model.state_dict())
    assert model.reparameterize() is model
    fused = features(model, *inputs)
    for a, b in zip(fused, expected):
        assert (a - b).abs().max() <= 1e-5
    assert model.config.text_config.reparameterized and model.config.vision_config.reparameterized
    if architecture.startswith("fastvit") or text_tower == "mct":
        assert len(model.state_dict()) < n_params
    model.reparameterize()  # idempotent
    for a, b in zip(features(model, *inputs), fused):
        assert torch.equal(a, b)

    model.save_pretrained(tmp_path)
    reloaded = MobileCLIPModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.vision_config.reparameterized
    assert set(reloaded.state_dict()) == set(model.state_dict())
    for a, b in zip(features(reloaded, *inputs), fused):
        assert torch.equal(a, b)


@pytest.mark.parametrize("text_tower, architecture", TOWERS[:2])
def test_save_load_round_trip(text_tower, architecture, tmp_path):
    model = build(text_tower, architecture)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = MobileCLIPModel.from_pretrained(tmp_path).eval()
    inputs = text_inputs(3, 16), image_inputs(2, 64)
    for a, b in zip(features(reloaded, *inputs), features(model, *inputs)):
        assert torch.equal(a, b)
    torch.testing.assert_close(reloaded.logit_scale, model.logit_scale)


def test_towers_alone_load_from_full_checkpoint(tmp_path):
    model = build("mct")
    model.save_pretrained(tmp_path)
    input_ids, pixel_values = text_inputs(3, 16), image_inputs(2, 64)
    text, image = features(model, input_ids, pixel_values)
    text_model = MobileCLIPTextModelWithProjection.from_pretrained(tmp_path).eval()
    vision_model = MobileCLIPVisionModelWithProjection.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(text_model(input_ids).text_embeds, text)
        out = vision_model(pixel_values)
    assert torch.equal(out.image_embeds, image)
    assert out.pooler_output.shape == (2, model.vision_model.num_features)


def test_gradient_checkpointing_gives_same_gradients():
    model = build("mct").train()
    input_ids, pixel_values = text_inputs(4, 16), image_inputs(4, 64)

    def grads():
        model.zero_grad()
        model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.eval()  # fixed BatchNorm statistics, so both passes compute the same function
    reference = grads()
    model.activation_checkpointing_enable()
    assert model.text_model.layers[0].gradient_checkpointing
    assert model.vision_model.stages[0].grad_checkpointing
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    checkpointed = grads()
    assert reference.keys() == checkpointed.keys()
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], msg=name)


def test_bad_inputs_give_clear_errors():
    model = build()
    with pytest.raises(ValueError, match="needs input_ids, pixel_values or both"):
        model()
    with pytest.raises(ValueError, match="context length is 16"):
        model.get_text_features(torch.ones(1, 20, dtype=torch.long))
    with pytest.raises(ValueError, match="as many texts as images"):
        model(input_ids=text_inputs(3, 16), pixel_values=image_inputs(2, 64), return_loss=True)
    with pytest.raises(ValueError, match="Valid variants: mobileclip-s0"):
        MobileCLIPConfig.from_variant("mobileclip-s9")


def test_variant_table_builds_every_released_config():
    from modeling_mobileclip import VARIANTS

    for name in VARIANTS:
        config = MobileCLIPConfig.from_variant(name)
        assert config.variant == name
        assert config.text_config.use_causal_mask == name.startswith(("mobileclip-b", "mobileclip2-b"))
        assert (config.text_config.text_tower == "mct") == (name == "mobileclip-s0")
    assert MobileCLIPConfig.from_variant("mobileclip-b").vision_config.stem_padding == 1
    assert MobileCLIPConfig.from_variant("mobileclip2-b").vision_config.stem_padding is None
    from modeling_mobileclip import normalize_variant

    assert normalize_variant("MobileCLIP2_L14") == "mobileclip2-l14" in VARIANTS
    assert MobileCLIPConfig.from_variant("MobileCLIP_S2").variant == "mobileclip-s2"


def test_example_input_ids_are_shaped_like_the_tokenizers():
    from modeling_mobileclip.example_inputs import example_input_ids

    text_config = tiny_config(context_length=16).text_config
    ids = example_input_ids(text_config, batch=5, seed=3)
    assert ids.shape == (5, 16) and (ids[:, 0] == text_config.bos_token_id).all()
    for row in ids:
        end = int((row == text_config.eos_token_id).nonzero())  # exactly one end token, then padding only
        assert 2 <= end < 16 and (row[end + 1 :] == 0).all() and (row[1:end] < text_config.eos_token_id - 1).all()
    full = example_input_ids(text_config, batch=2, ends=[15, 15])
    assert (full[:, -1] == text_config.eos_token_id).all() and (full[:, 1:-1] > 0).all()


def test_vision_tower_alone_gradient_checkpointing():
    config = tiny_config("transformer", "fastvit_mci0")
    model = randomize_(MobileCLIPVisionModelWithProjection(config.vision_config))
    pixel_values = image_inputs(2, 64)

    def grads():
        model.zero_grad()
        model(pixel_values).image_embeds.sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    reference = grads()
    model.gradient_checkpointing_enable()  # used to raise: no transformers layer in a timm tower
    assert model.is_gradient_checkpointing and model.vision_model.stages[0].grad_checkpointing
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    checkpointed = grads()
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], msg=name)


@pytest.mark.parametrize("text_tower, architecture", TOWERS)
def test_eager_and_sdpa_agree(text_tower, architecture, tmp_path):
    build(text_tower, architecture, causal=architecture.startswith("vit")).save_pretrained(tmp_path)
    inputs = text_inputs(3, 16), image_inputs(2, 64 if architecture.startswith("fastvit") else 28)
    sdpa = MobileCLIPModel.from_pretrained(tmp_path).eval()
    eager = MobileCLIPModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert sdpa.config.text_config._attn_implementation == "sdpa"
    for a, b in zip(features(eager, *inputs), features(sdpa, *inputs)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        out = eager.get_text_features(inputs[0][:, :7], output_attentions=True, output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 7, 32)  # the input's positions, though the tower runs on 16
    assert len(out.hidden_states) == len(eager.text_model.layers) + 1
    assert out.attentions[0].shape == (3, 2, 7, 16)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(3, 2, 7))


def test_outputs_tuples_and_image_hidden_states():
    model = build("transformer", "fastvit_mci0")
    pixel_values = image_inputs(2, 64)
    with torch.no_grad():
        out = model.get_image_features(pixel_values, output_hidden_states=True)
        assert len(out.hidden_states) == 4 and out.hidden_states[-1].shape[1] == 64  # one map per MCi stage
        assert isinstance(model.get_image_features(pixel_values, return_dict=False), tuple)
        assert isinstance(model.get_text_features(text_inputs(2, 16), return_dict=False), tuple)
        torch.testing.assert_close(out.pooler_output, model.get_image_features(pixel_values).pooler_output)


def test_resize_token_embeddings():
    model = build("transformer")
    model.resize_token_embeddings(49410)
    assert model.get_input_embeddings().weight.shape[0] == 49410
