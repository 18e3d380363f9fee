"""transformers' own common test suites (ModelTesterMixin, ConfigTester) on tiny MobileCLIP configs of every tower
kind, with transformers' CLIP through the same harness as a control.

The mixins are transformers' `tests/test_*_common.py`, vendored from its sdist in `transformers_common/`
(PROVENANCE.md). Every skip below names its reason; skips that the mixins decide themselves (GPU-only, flash
attention, multi-GPU, features MobileCLIP does not have) are theirs.
"""

import copy
import tempfile
import unittest

from vendored_mixins import require_vendored_mixins

require_vendored_mixins()

import torch  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)
from transformers_common.test_configuration_common import ConfigTester  # noqa: E402
from transformers_common.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402

from modeling_mobileclip import (  # noqa: E402
    MobileCLIPConfig,
    MobileCLIPModel,
    MobileCLIPTextConfig,
    MobileCLIPTextModel,
    MobileCLIPTextModelWithProjection,
    MobileCLIPVisionConfig,
    MobileCLIPVisionModelWithProjection,
)

CHANNEL_FIRST = (
    "MCi towers return channel-first (B, C, H, W) feature maps, timm's layout, not a (B, L, hidden) sequence"
)


def _attention_layers(model):
    from modeling_mobileclip.modeling_mobileclip import MobileCLIPAttention

    return [m for m in model.modules() if isinstance(m, MobileCLIPAttention)]


# --------------------------------------------------------------------------------------------------------------------
# Model testers: tiny configs and inputs, the attributes ModelTesterMixin reads.


class MobileCLIPTextModelTester:
    """Inputs shorter than the context (7 of 16 positions): the model pads internally, outputs cover the 7."""

    def __init__(self, parent, text_tower="transformer", causal=False, batch_size=3, seq_length=7):
        self.parent, self.text_tower, self.causal = parent, text_tower, causal
        self.batch_size, self.seq_length = batch_size, seq_length
        self.vocab_size, self.hidden_size, self.num_attention_heads = 99, 32, 4
        self.num_hidden_layers, self.context_length, self.projection_dim = 2, 16, 24
        self.is_training = True
        # Attentions: each input position over every position of the padded context it attends to.
        self.key_length = self.context_length
        if text_tower == "mct":  # embeddings, RepMixer block, transformer layers, RepMixer block
            self.expected_num_hidden_layers = self.num_hidden_layers + 3

    def get_config(self):
        return MobileCLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=37,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            max_position_embeddings=self.context_length,
            text_tower=self.text_tower,
            use_causal_mask=self.causal,
            repmixer_kernel_size=3,
            projection_dim=self.projection_dim,
            bos_token_id=self.vocab_size - 2,
            eos_token_id=self.vocab_size - 1,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 2)
        input_ids[:, -1] = self.vocab_size - 1  # end of text, the largest id, where the tower pools
        return self.get_config(), input_ids

    def prepare_config_and_inputs_for_common(self):
        config, input_ids = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids}


class MobileCLIPVisionModelTester:
    def __init__(self, parent, architecture="fastvit_mci0", batch_size=2):
        self.parent, self.architecture, self.batch_size = parent, architecture, batch_size
        self.num_channels, self.projection_dim, self.is_training = 3, 24, True
        if architecture.startswith("fastvit_"):
            self.image_size, self.hidden_size = 64, 64
            self.model_args = {"layers": [1, 1, 1, 1], "embed_dims": [16, 16, 32, 64]}
            self.num_hidden_layers = 4  # stages
        else:
            self.image_size, self.patch_size, self.hidden_size = 28, 14, 32
            self.model_args = {"embed_dim": 32, "depth": 2, "num_heads": 2}
            self.num_hidden_layers = 2  # blocks
            self.seq_length = 1 + (self.image_size // self.patch_size) ** 2  # class token + patches
        self.num_attention_heads = 2
        # timm's forward_intermediates: one entry per stage / block, no separate embedding entry.
        self.expected_num_hidden_layers = self.num_hidden_layers

    def get_config(self):
        return MobileCLIPVisionConfig(
            architecture=self.architecture,
            image_size=self.image_size,
            projection_dim=self.projection_dim,
            model_args=copy.deepcopy(self.model_args),
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class MobileCLIPModelTester:
    def __init__(self, parent, text_tower="transformer", architecture="fastvit_mci0", causal=False):
        self.parent = parent
        self.text_model_tester = MobileCLIPTextModelTester(parent, text_tower, causal, batch_size=2)
        self.vision_model_tester = MobileCLIPVisionModelTester(parent, architecture, batch_size=2)
        self.batch_size = 2
        self.seq_length = self.text_model_tester.seq_length
        self.key_length = self.text_model_tester.key_length
        self.num_hidden_layers = self.text_model_tester.num_hidden_layers
        self.num_attention_heads = self.text_model_tester.num_attention_heads
        self.hidden_size = self.text_model_tester.hidden_size
        self.is_training = True

    def get_config(self):
        return MobileCLIPConfig(
            text_config=self.text_model_tester.get_config(),
            vision_config=self.vision_model_tester.get_config(),
            projection_dim=24,
        )

    def prepare_config_and_inputs_for_common(self):
        _, input_ids = self.text_model_tester.prepare_config_and_inputs()
        _, pixel_values = self.vision_model_tester.prepare_config_and_inputs()
        return self.get_config(), {"input_ids": input_ids, "pixel_values": pixel_values, "return_loss": False}


# The control: transformers' CLIP, tiny, through the same mixins.


class CLIPTextModelTester:
    def __init__(self, parent, batch_size=3, seq_length=7):
        self.parent, self.batch_size, self.seq_length = parent, batch_size, seq_length
        self.vocab_size, self.hidden_size, self.num_attention_heads, self.num_hidden_layers = 99, 32, 4, 2
        self.is_training = True

    def get_config(self):
        return CLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            projection_dim=24,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
            max_position_embeddings=16,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        return self.get_config(), {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


class CLIPVisionModelTester:
    def __init__(self, parent, batch_size=2):
        self.parent, self.batch_size, self.image_size, self.patch_size = parent, batch_size, 28, 14
        self.hidden_size, self.num_attention_heads, self.num_hidden_layers = 32, 2, 2
        self.num_channels, self.is_training = 3, True
        self.seq_length = 1 + (self.image_size // self.patch_size) ** 2

    def get_config(self):
        return CLIPVisionConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            projection_dim=24,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
        )

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class CLIPModelTester:
    def __init__(self, parent):
        self.parent = parent
        self.text_model_tester = CLIPTextModelTester(parent, batch_size=2)
        self.vision_model_tester = CLIPVisionModelTester(parent, batch_size=2)
        self.batch_size, self.is_training = 2, True
        self.seq_length = self.text_model_tester.seq_length
        self.num_hidden_layers = self.text_model_tester.num_hidden_layers
        self.num_attention_heads = self.text_model_tester.num_attention_heads
        self.hidden_size = self.text_model_tester.hidden_size

    def get_config(self):
        return CLIPConfig(
            text_config=self.text_model_tester.get_config().to_dict(),
            vision_config=self.vision_model_tester.get_config().to_dict(),
            projection_dim=24,
        )

    def prepare_config_and_inputs_for_common(self):
        _, text_inputs = self.text_model_tester.prepare_config_and_inputs_for_common()
        _, image_inputs = self.vision_model_tester.prepare_config_and_inputs_for_common()
        return self.get_config(), {**text_inputs, **image_inputs, "return_loss": False}


# --------------------------------------------------------------------------------------------------------------------
# Test classes


NO_LOSS = ("a tower alone returns embeddings, no loss to train on (as transformers' CLIP towers; the dual encoders' "
           "tests train)")


class _TowerTests(ModelTesterMixin):
    def test_config(self):
        self.config_tester.run_common_tests()

    def test_training(self):
        self.skipTest(NO_LOSS)

    def test_training_gradient_checkpointing(self):
        self.skipTest(NO_LOSS)

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self.skipTest(NO_LOSS)

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self.skipTest(NO_LOSS)


class _TextTests(_TowerTests):
    test_resize_embeddings = True


class _VisionTests(_TowerTests):
    has_attentions = False  # the timm image towers do not return attention weights
    test_resize_embeddings = False

    def test_gradient_checkpointing_enable_disable(self):
        if self.all_model_classes[0] is MobileCLIPVisionModelWithProjection:
            self.skipTest(
                "timm's towers checkpoint through their own switch, not transformers' GradientCheckpointingLayer; "
                "the switch and its gradients are tested in tests/test_modeling.py"
            )
        super().test_gradient_checkpointing_enable_disable()

    def test_inputs_embeds(self):
        self.skipTest("image towers take pixel_values, there are no input embeddings")

    def test_model_get_set_embeddings(self):
        self.skipTest("image towers take pixel_values, there are no input embeddings")


PER_TOWER = (
    "a dual encoder's output holds each tower's outputs (text_model_output, vision_model_output), tested on the "
    "towers, as transformers' CLIPModel"
)


class _CompositeTests(ModelTesterMixin):
    _is_composite = True
    additional_model_inputs = ["pixel_values"]  # with input_ids, so that eager and SDPA logits are compared

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:  # the contrastive loss is the dual encoder's training objective
            inputs_dict["return_loss"] = True
        return inputs_dict

    def test_attention_outputs(self):
        self.skipTest(PER_TOWER)

    def test_hidden_states_output(self):
        self.skipTest(PER_TOWER)

    def test_retain_grad_hidden_states_attentions(self):
        self.skipTest(PER_TOWER)

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_inputs_embeds(self):
        self.skipTest("dual encoders take input_ids and pixel_values; input embeddings are tested on the text towers")

    def test_inputs_embeds_matches_input_ids(self):
        self.skipTest("dual encoders take input_ids and pixel_values; input embeddings are tested on the text towers")


def _text_case(name, text_tower, causal):
    class Case(_TextTests, unittest.TestCase):
        all_model_classes = (MobileCLIPTextModel, MobileCLIPTextModelWithProjection)

        def setUp(self):
            self.model_tester = MobileCLIPTextModelTester(self, text_tower, causal)
            self.config_tester = ConfigTester(self, config_class=MobileCLIPTextConfig, hidden_size=64)

    Case.__name__ = Case.__qualname__ = name
    return Case


def _vision_case(name, architecture):
    class Case(_VisionTests, unittest.TestCase):
        all_model_classes = (MobileCLIPVisionModelWithProjection,)
        skip_test_image_features_output_shape = architecture.startswith("fastvit_")

        def setUp(self):
            self.model_tester = MobileCLIPVisionModelTester(self, architecture)
            self.config_tester = ConfigTester(
                self,
                config_class=MobileCLIPVisionConfig,
                has_text_modality=False,
                common_properties=["architecture", "image_size", "num_channels"],
            )

        if architecture.startswith("fastvit_"):

            def test_hidden_states_output(self):
                self.skipTest(CHANNEL_FIRST)

            def test_num_layers_is_small(self):
                self.skipTest("MCi always has timm's 4 stages (one block each here): 4 hidden states, not <= 2 layers")

        else:

            def test_retain_grad_hidden_states_attentions(self):
                self.skipTest(
                    "ViT hidden states are timm's forward_intermediates, re-joined class and patch tokens: copies of "
                    "the block outputs, not tensors the forward continues from"
                )

    Case.__name__ = Case.__qualname__ = name
    return Case


def _model_case(name, text_tower, architecture, causal):
    class Case(_CompositeTests, unittest.TestCase):
        all_model_classes = (MobileCLIPModel,)
        skip_test_image_features_output_shape = architecture.startswith("fastvit_")

        def test_get_image_features_attentions(self):
            self.skipTest("the timm image towers do not return attention weights")

        if text_tower == "mct":

            def test_get_text_features_attentions(self):
                self.skipTest(
                    "MCt's RepMixer blocks add hidden states without attention: 2 attention maps for 5 hidden states, "
                    "where the mixin expects one per step; MobileCLIPTextMCtTest checks the tower's attentions"
                )

        def test_sdpa_can_dispatch_composite_models(self):
            """transformers' test, for a composite whose image tower is timm's own module (not a PreTrainedModel, so
            that checkpoints keep timm's keys): the text tower is a PreTrainedModel and dispatches as in the
            original; the image tower follows vision_config._attn_implementation through timm's fused_attn."""
            config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
            model = MobileCLIPModel(config)
            with tempfile.TemporaryDirectory() as tmpdirname:
                model.save_pretrained(tmpdirname)
                for requested, expected in ((None, "sdpa"), ("eager", "eager")):
                    kwargs = {} if requested is None else {"attn_implementation": requested}
                    loaded = MobileCLIPModel.from_pretrained(tmpdirname, **kwargs).eval()
                    self.assertEqual(loaded.text_model.config._attn_implementation, expected)
                    # None (nothing requested) is timm's default, SDPA
                    self.assertEqual(loaded.config.vision_config._attn_implementation or "sdpa", expected)
                    self.assertTrue(all(a.config._attn_implementation == expected for a in _attention_layers(loaded)))
                    with torch.no_grad():
                        loaded.get_image_features(inputs_dict["pixel_values"])
                    fused = [m.fused_attn for m in loaded.vision_model.modules() if hasattr(m, "fused_attn")]
                    self.assertTrue(all(f == (expected != "eager") for f in fused))

        def setUp(self):
            self.model_tester = MobileCLIPModelTester(self, text_tower, architecture, causal)
            self.config_tester = ConfigTester(
                self, config_class=MobileCLIPConfig, has_text_modality=False, common_properties=["projection_dim"]
            )

    Case.__name__ = Case.__qualname__ = name
    return Case


MobileCLIPTextTransformerTest = _text_case("MobileCLIPTextTransformerTest", "transformer", False)
MobileCLIPTextMCtTest = _text_case("MobileCLIPTextMCtTest", "mct", False)
MobileCLIPTextCausalTest = _text_case("MobileCLIPTextCausalTest", "transformer", True)
MobileCLIPVisionMCiTest = _vision_case("MobileCLIPVisionMCiTest", "fastvit_mci0")
MobileCLIPVisionViTTest = _vision_case("MobileCLIPVisionViTTest", "vit_large_patch14_clip_224")
MobileCLIPModelMCiTransformerTest = _model_case("MobileCLIPModelMCiTransformerTest", "transformer", "fastvit_mci0",
                                                False)
MobileCLIPModelMCiMCtTest = _model_case("MobileCLIPModelMCiMCtTest", "mct", "fastvit_mci0", False)
MobileCLIPModelViTCausalTest = _model_case("MobileCLIPModelViTCausalTest", "transformer",
                                           "vit_large_patch14_clip_224", True)


class CLIPTextControlTest(_TextTests, unittest.TestCase):
    all_model_classes = (CLIPTextModel, CLIPTextModelWithProjection)

    def setUp(self):
        self.model_tester = CLIPTextModelTester(self)
        self.config_tester = ConfigTester(self, config_class=CLIPTextConfig, hidden_size=64)


class CLIPVisionControlTest(_VisionTests, unittest.TestCase):
    all_model_classes = (CLIPVisionModel, CLIPVisionModelWithProjection)
    has_attentions = True

    def setUp(self):
        self.model_tester = CLIPVisionModelTester(self)
        # hidden_size=64 with CLIPVisionConfig's default 12 heads fails the config's head-count validation.
        self.config_tester = ConfigTester(self, config_class=CLIPVisionConfig, has_text_modality=False, hidden_size=64,
                                          num_attention_heads=4)


class CLIPModelControlTest(_CompositeTests, unittest.TestCase):
    all_model_classes = (CLIPModel,)
    test_resize_embeddings = False  # CLIPModel has no input embeddings of its own (its towers do)

    def test_model_get_set_embeddings(self):
        self.skipTest("CLIPModel has no input/output embeddings of its own: transformers raises NotImplementedError")

    def setUp(self):
        self.model_tester = CLIPModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=CLIPConfig, has_text_modality=False, common_properties=["projection_dim"]
        )
