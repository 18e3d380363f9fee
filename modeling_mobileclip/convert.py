"""Convert released MobileCLIP checkpoints to this package's transformers format.

Sources, detected from their keys:
  * Apple's v1 `.pt` files (`mobileclip_s0.pt` ... `mobileclip_blt.pt`, Hub `apple/MobileCLIP-S2`):
    `image_encoder.model.*`, `text_encoder.*`, `logit_scale`.
  * open_clip checkpoints (Hub `apple/MobileCLIP-S2-OpenCLIP`, `timm/MobileCLIP2-S2-OpenCLIP`, MobileCLIP2 `.pt`,
    raw training checkpoints with `state_dict` / `module.` wrappers): `visual.trunk.*`, `text.*`, `logit_scale`.
  * timm image-tower checkpoints (Hub `apple/mobileclip_s2_timm`, `timm/fastvit_mci2.apple_mclip2_dfndr2b`):
    timm's own keys; these convert to a `MobileCLIPVisionModelWithProjection`.

Conversion is strict (a missing or unexpected key is an error listing them). When the reference implementation of
the source format is importable (Apple's `mobileclip` package, `open_clip`, `timm`), the converted model's
embeddings are checked against it before anything is written. Model and processor are written together, atomically:
an existing output folder (`--overwrite`) is moved aside, the new one moved in, and only then the old one deleted, so
that a crash leaves one complete folder, which the next run puts back in place. The output folder is checked before
the conversion starts, and a checkpoint inside it is refused (replacing the folder would delete the source).

    python -m modeling_mobileclip.convert --variant mobileclip-s2 --checkpoint mobileclip_s2.pt --output out/ \
        [--reparameterize] [--push-to-hub user/MobileCLIP-S2-hf]
"""

import argparse
import logging
import os
import re
import shutil
from dataclasses import dataclass

import torch
from torch import nn

from .atomic import TEMPORARY_INFIX, temporaries, temporary_name
from .configuration_mobileclip import VARIANTS, MobileCLIPConfig
from .example_inputs import example_input_ids, example_pixel_values
from .modelcard import APPLE_MODEL_LICENSE, model_card
from .modeling_mobileclip import MobileCLIPModel, MobileCLIPVisionModelWithProjection, create_image_tower
from .paths import check_local_path, is_hub_id

logger = logging.getLogger(__name__)

# Text-tower renames, applied in order to every key. Apple's v1 layout (`mobileclip/text_encoder.py`) ...
APPLE_TEXT_KEY_MAPPING = [
    (r"^text_encoder\.embedding_layer\.", "text_model.token_embedding."),
    (r"^text_encoder\.positional_embedding\.pos_embed\.pos_embed$", "text_model.positional_embedding"),
    (r"^text_encoder\.transformer\.", "text_model.layers."),
    (r"^text_encoder\.final_layer_norm\.", "text_model.final_layer_norm."),
    (r"^text_encoder\.projection_layer$", "text_projection.weight"),
    (r"\.pre_norm_mha\.0\.", ".layer_norm1."),
    (r"\.pre_norm_mha\.1\.", ".self_attn."),
    (r"\.pre_norm_ffn\.0\.", ".layer_norm2."),
    (r"\.pre_norm_ffn\.1\.", ".mlp.fc1."),
    (r"\.pre_norm_ffn\.4\.", ".mlp.fc2."),
    # MCt RepMixer blocks (S0 layers 0 and 5): MobileOne branch names as in timm's FastViT.
    (r"\.rbr_skip\.", ".identity."),
    (r"\.rbr_conv\.0\.", ".conv_kxk."),
    (r"\.convffn\.", ".mlp."),
]
# ... and open_clip's `TextTransformer`.
OPEN_CLIP_TEXT_KEY_MAPPING = [
    (r"^text\.token_embedding\.", "text_model.token_embedding."),
    (r"^text\.positional_embedding$", "text_model.positional_embedding"),
    (r"^text\.transformer\.resblocks\.", "text_model.layers."),
    (r"^text\.ln_final\.", "text_model.final_layer_norm."),
    (r"^text\.text_projection$", "text_projection.weight"),
    (r"\.ln_1\.", ".layer_norm1."),
    (r"\.attn\.in_proj_(weight|bias)$", r".self_attn.qkv_proj.\1"),
    (r"\.attn\.out_proj\.", ".self_attn.out_proj."),
    (r"\.ln_2\.", ".layer_norm2."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]
# timm keeps the CLIP projection in its classifier head (`timm_proj: null` in open_clip's configs).
TIMM_HEAD_KEY_MAPPING = [(r"^head\.fc\.", "visual_projection."), (r"^head\.", "visual_projection.")]

# Reference implementations per variant, used to verify a conversion when importable (test-only dependencies).
APPLE_REFERENCE = {
    "mobileclip-s0": "mobileclip_s0",
    "mobileclip-s1": "mobileclip_s1",
    "mobileclip-s2": "mobileclip_s2",
    "mobileclip-b": "mobileclip_b",
    "mobileclip-b-lt": "mobileclip_b",
}
# v1 S3/S4/L-14 have the MobileCLIP2 architectures (apple/ml-mobileclip `mobileclip2/model_configs`).
OPEN_CLIP_REFERENCE = {
    "mobileclip-s1": "MobileCLIP-S1",
    "mobileclip-s2": "MobileCLIP-S2",
    "mobileclip-b": "MobileCLIP-B",
    "mobileclip-b-lt": "MobileCLIP-B",
    "mobileclip-s3": "MobileCLIP2-S3",
    "mobileclip-s4": "MobileCLIP2-S4",
    "mobileclip-l14": "MobileCLIP2-L-14",
    "mobileclip2-s0": "MobileCLIP2-S0",
    "mobileclip2-s2": "MobileCLIP2-S2",
    "mobileclip2-b": "MobileCLIP2-B",
    "mobileclip2-s3": "MobileCLIP2-S3",
    "mobileclip2-s4": "MobileCLIP2-S4",
    "mobileclip2-l14": "MobileCLIP2-L-14",
}
# Checkpoint files looked for in a local folder or Hub repo, in order of preference.
CHECKPOINT_PATTERNS = [
    r"open_clip_model\.safetensors$",
    r"model\.safetensors$",
    r"\.safetensors$",
    r"open_clip_pytorch_model\.bin$",
    r"pytorch_model\.bin$",
    r"\.pt$",
    r"\.pth$",
    r"\.bin$",
]
VERIFY_ATOL = 1e-4


def _rename(key: str, mapping: list[tuple[str, str]]) -> str:
    for pattern, replacement in mapping:
        key = re.sub(pattern, replacement, key)
    return key


def unwrap_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Strips training wrappers: a `state_dict` entry and DataParallel's `module.` prefix."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"A checkpoint must hold a state dict (a dict of tensors), got a {type(checkpoint).__name__}.")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(f"The checkpoint's `state_dict` is a {type(state_dict).__name__}, not a dict of tensors.")
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"Not a state dict: the checkpoint has entries that are not tensors: {_head(not_tensors)}.")
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def detect_format(state_dict: dict[str, torch.Tensor]) -> str:
    """Returns `"apple"`, `"open_clip"` or `"timm"`."""
    if any(k.startswith("image_encoder.model.") for k in state_dict):
        return "apple"
    if any(k.startswith("visual.trunk.") for k in state_dict):
        return "open_clip"
    if any(k.startswith(("stem.", "stages.", "patch_embed.", "blocks.")) for k in state_dict):
        return "timm"
    raise ValueError(
        "Unrecognised checkpoint layout: expected Apple's (`image_encoder.model.*`), open_clip's (`visual.trunk.*`) "
        f"or a timm image tower's keys. First keys: {list(state_dict)[:5]}"
    )


def _convert_text(state_dict: dict, mapping: list, config: MobileCLIPConfig) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        new_key = _rename(key, mapping)
        if new_key == "text_model.positional_embedding":
            value = value.reshape(config.text_config.max_position_embeddings, -1)  # Apple stores (1, 1, 77, D)
        elif new_key == "text_projection.weight":
            value = value.t()  # used as `x @ P` in both sources; nn.Linear computes `x @ W.T`
        out[new_key] = value
    return out


def _convert_image_tower(timm_state_dict: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in timm_state_dict.items():
        new_key = _rename(key, TIMM_HEAD_KEY_MAPPING)
        out[new_key if new_key.startswith("visual_projection.") else f"vision_model.{key}"] = value
    return out


def _apple_image_to_timm(state_dict: dict, config: MobileCLIPConfig) -> dict[str, torch.Tensor]:
    """Apple's MCi / ViT-B keys to timm's, with timm's own public converters (`checkpoint_filter_fn`, which
    recognise Apple's keys)."""
    from timm.models import fastvit, vision_transformer_hybrid

    image = {k: v for k, v in state_dict.items() if k.startswith("image_encoder.model.")}
    tower = create_image_tower(config.vision_config)
    if config.vision_config.architecture.startswith("fastvit_"):
        # Apple's CLIP projection `head.proj` (C, E) is timm's classifier with a zero bias.
        projection = image.pop("image_encoder.model.head.proj")
        return {
            **fastvit.checkpoint_filter_fn(image, tower),
            "head.fc.weight": projection.t(),
            "head.fc.bias": projection.new_zeros(projection.shape[1]),
        }
    return vision_transformer_hybrid.checkpoint_filter_fn(image, tower)


def convert_state_dict(state_dict: dict[str, torch.Tensor], config: MobileCLIPConfig) -> dict[str, torch.Tensor]:
    """Maps a released checkpoint's state dict onto this package's parameter names."""
    state_dict = unwrap_state_dict(state_dict)
    return _convert_state_dict(state_dict, detect_format(state_dict), config)


def _convert_state_dict(state_dict: dict[str, torch.Tensor], source: str, config: MobileCLIPConfig):
    """`convert_state_dict` of an unwrapped state dict whose format (`detect_format`) is known."""
    if source == "timm":
        return _convert_image_tower(state_dict)
    if source == "apple":
        text = {k: v for k, v in state_dict.items() if k.startswith("text_encoder.")}
        converted = _convert_image_tower(_apple_image_to_timm(state_dict, config))
        converted.update(_convert_text(text, APPLE_TEXT_KEY_MAPPING, config))
    else:
        trunk = {k.removeprefix("visual.trunk."): v for k, v in state_dict.items() if k.startswith("visual.trunk.")}
        text = {k: v for k, v in state_dict.items() if k.startswith("text.") and k != "text.attn_mask"}
        converted = _convert_image_tower(trunk)
        converted.update(_convert_text(text, OPEN_CLIP_TEXT_KEY_MAPPING, config))
        leftovers = [k for k in state_dict if not k.startswith(("visual.trunk.", "text.", "logit_scale"))]
        converted.update({k: state_dict[k] for k in leftovers})  # reported as unexpected by load_strict
    if "logit_scale" in state_dict:
        converted["logit_scale"] = state_dict["logit_scale"].reshape(())
    return converted


def _head(items: list[str], n: int = 20) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """`load_state_dict` that fails with the full list of missing and unexpected keys, and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"Checkpoint does not match {type(model).__name__} ({getattr(model.config, 'variant', None)}):\n"
            f"  missing keys ({len(missing)}): {_head(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {_head(unexpected)}\n"
            f"  shape mismatches ({len(mismatched)}): {_head(mismatched)}"
        )
    model.load_state_dict(state_dict, strict=True)


def resolve_checkpoint(checkpoint: str) -> str:
    """A local file, a local folder or a Hub repo id -> path of the checkpoint file to read."""
    if os.path.isfile(checkpoint):
        return checkpoint
    if os.path.isdir(checkpoint):
        files, fetch = os.listdir(checkpoint), lambda name: os.path.join(checkpoint, name)
    else:
        check_local_path(checkpoint, "Checkpoint")  # a mistyped path, not a Hub id
        import huggingface_hub

        files = huggingface_hub.list_repo_files(checkpoint)
        fetch = lambda name: huggingface_hub.hf_hub_download(checkpoint, name)  # noqa: E731
    for pattern in CHECKPOINT_PATTERNS:
        matches = sorted(f for f in files if re.search(pattern, f))
        if matches:
            return fetch(matches[0])
    raise FileNotFoundError(f"No checkpoint file (.safetensors, .bin, .pt, .pth) in {checkpoint!r}: {sorted(files)}")


def load_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Reads a `.safetensors` file or a PyTorch checkpoint, with an error naming the file if it cannot be read."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        # Released checkpoints are plain tensors; weights_only refuses anything that would run code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, empty or foreign files fail in many ways (zip, pickle, EOF)
        first_line = (str(error).splitlines() or [""])[0]
        raise ValueError(
            f"Cannot read checkpoint {path!r}: {type(error).__name__}: {first_line} (truncated, or not a PyTorch or "
            "safetensors checkpoint?)"
        ) from error


# --------------------------------------------------------------------------------------------------------------------
# Verification against reference implementations


def reference_model(source: str, variant: str, state_dict: dict) -> tuple[nn.Module, str] | None:
    """The reference implementation of the checkpoint's format loaded with the same weights, if importable."""
    try:
        if source == "apple" and variant in APPLE_REFERENCE:
            import mobileclip

            model = mobileclip.create_model_and_transforms(
                APPLE_REFERENCE[variant], pretrained=None, reparameterize=False
            )[0]
            model.load_state_dict(state_dict)
            return model, "Apple's mobileclip"
        if source == "open_clip" and variant in OPEN_CLIP_REFERENCE:
            import open_clip

            model = open_clip.create_model(OPEN_CLIP_REFERENCE[variant], pretrained=None)
            model.load_state_dict(state_dict)
            return model, "open_clip"
    except ImportError:
        return None
    return None


@torch.no_grad()
def verify(model: MobileCLIPModel, reference: nn.Module, name: str, compare_image: bool = True) -> dict[str, float]:
    """Max abs difference of text and image embeddings against a model with open_clip's `encode_*` API."""
    model.eval(), reference.eval()
    pixel_values = example_pixel_values(model.config.vision_config, batch=2)
    input_ids = example_input_ids(model.config.text_config, batch=2)
    diffs = {
        "text": (model.get_text_features(input_ids).pooler_output - reference.encode_text(input_ids)).abs().max().item()
    }
    if compare_image:
        image = model.get_image_features(pixel_values).pooler_output
        diffs["image"] = (image - reference.encode_image(pixel_values)).abs().max().item()
    failed = {k: v for k, v in diffs.items() if not v <= VERIFY_ATOL}
    if failed:
        raise ValueError(f"Converted model differs from {name}: max abs diff {failed} > {VERIFY_ATOL}.")
    logger.info("Verified against %s: max abs diff %s", name, diffs)
    return diffs


@dataclass
class Conversion:
    """A converted model and how it was obtained (for its model card)."""

    model: nn.Module
    source_format: str  # "apple", "open_clip" or "timm"
    reference: str | None = None  # the implementation it was verified against, if any
    max_abs_diff: dict[str, float] | None = None  # per tower, against `reference`


def convert(variant: str, checkpoint: str | dict, reparameterize: bool = False, verify_reference: bool = True):
    """`convert_checkpoint`, also returning the source format and the verification (`Conversion`)."""
    config = MobileCLIPConfig.from_variant(variant)
    state_dict = load_checkpoint(resolve_checkpoint(checkpoint)) if isinstance(checkpoint, str) else checkpoint
    state_dict = unwrap_state_dict(state_dict)
    source = detect_format(state_dict)
    model = MobileCLIPVisionModelWithProjection(config.vision_config) if source == "timm" else MobileCLIPModel(config)
    load_strict(model, _convert_state_dict(state_dict, source, config))
    result = Conversion(model, source)
    if verify_reference and source != "timm":
        reference = reference_model(source, config.variant, state_dict)
        if reference is None:
            logger.warning("No reference implementation importable for %s (%s format): not verified.", variant, source)
        else:
            # open_clip builds v1 MobileCLIP-B with timm's stem padding and LayerNorm eps (see configuration), so
            # only its text tower is the same function.
            same_image_tower = source == "apple" or config.vision_config.stem_padding is None
            result.reference = reference[1]
            result.max_abs_diff = verify(model, *reference, compare_image=same_image_tower)
    if reparameterize:
        model.reparameterize()
    model.eval()
    return result


def convert_checkpoint(
    variant: str, checkpoint: str | dict, reparameterize: bool = False, verify_reference: bool = True
):
    """Builds the variant's model and loads a released checkpoint into it, verified when a reference exists.

    Args:
        variant: a name from `VARIANTS`, e.g. `"mobileclip-s2"`.
        checkpoint: a file, folder or Hub id, or an already loaded state dict.
        reparameterize: fuse the multi-branch blocks after loading (and verification).
        verify_reference: compare with the source format's reference implementation when it is importable.

    Returns:
        `MobileCLIPModel`, or `MobileCLIPVisionModelWithProjection` for image-tower-only (timm) checkpoints.
    """
    return convert(variant, checkpoint, reparameterize, verify_reference).model


def conversion_card(variant: str, checkpoint: str, conversion: Conversion, repo_or_path: str):
    """The model card of a converted release: Apple's licence, the source checkpoint and the parity checked."""
    model = conversion.model
    if conversion.reference:
        diffs = ", ".join(f"{tower} {diff:.1e}" for tower, diff in conversion.max_abs_diff.items())
        checked = f"Checked before writing against {conversion.reference} on the same weights: max abs diff {diffs}."
    else:
        checked = "Not checked against a reference implementation (none importable for this format)."
    vision_config = getattr(model.config, "vision_config", model.config)  # an image tower alone has its own config
    form = "fused (re-parameterised)" if vision_config.reparameterized else "train-time (un-fused)"
    how_made = (f"`{variant}` converted by `python -m modeling_mobileclip.convert` from `{checkpoint}` "
                f"({conversion.source_format} format), saved in its {form} form. {checked}")
    base = checkpoint if is_hub_id(checkpoint) else None
    return model_card(variant, how_made, repo_or_path, APPLE_MODEL_LICENSE, base_model=base,
                      tags=[variant, f"converted-from-{conversion.source_format}"])


def _moved_aside(output_dir: str) -> str:
    """Where an existing output folder waits while the new one is moved in: a fixed name, so that the next run finds
    it, of the temporaries' form (`atomic.temporaries`)."""
    parent, name = os.path.split(os.path.abspath(output_dir))
    return os.path.join(parent, f".{name}{TEMPORARY_INFIX}old")


def recover_output(output_dir: str) -> None:
    """Completes or undoes a replacement of `output_dir` that a crash interrupted, and removes its leftovers.

    The old folder is moved aside before the new one is moved in: if the process died in between, the old one is put
    back; if it died after, the old one is deleted. Half-written temporary folders of killed runs are deleted.
    """
    old = _moved_aside(output_dir)
    if os.path.exists(old):
        if os.path.exists(output_dir):
            shutil.rmtree(old)
        else:
            os.replace(old, output_dir)
            logger.warning("Restored %s, which an interrupted conversion had moved aside.", output_dir)
    parent, name = os.path.split(os.path.abspath(output_dir))
    for staging in temporaries(parent, name):
        shutil.rmtree(staging, ignore_errors=True)


def check_output(output_dir: str, overwrite: bool = False) -> None:
    """Raises `FileExistsError` unless `output_dir` can be written: absent, an empty folder, or `overwrite`."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"{output_dir} exists and is a file, not a folder.")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")


def check_source_outside_output(checkpoint: str, output_dir: str) -> None:
    """Raises `ValueError` if the local file or folder `checkpoint` lies inside `output_dir`, which is replaced."""
    if not os.path.exists(checkpoint):
        return
    source, output = os.path.realpath(checkpoint), os.path.realpath(output_dir)
    if os.path.commonpath([source, output]) == output:
        raise ValueError(
            f"The checkpoint {checkpoint!r} lies inside the output folder {output_dir!r}, which the conversion "
            "replaces: that would delete the checkpoint. Write the converted model to another folder."
        )


def save_converted(model, processor, output_dir: str, overwrite: bool = False, card=None) -> None:
    """Writes model, processor and model card (`README.md`, if given) into a temporary folder beside `output_dir`
    (named as `atomic.temporary_name` names them), then moves it into place, so an interrupted conversion never leaves
    a half-written folder, and a crash while replacing an existing folder leaves one complete folder (see
    `recover_output`)."""
    recover_output(output_dir)
    check_output(output_dir, overwrite)
    staging = temporary_name(output_dir)
    os.makedirs(staging)
    try:
        model.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)
        if card is not None:
            card.save(os.path.join(staging, "README.md"))
        if not os.path.exists(output_dir):
            os.replace(staging, output_dir)
            return
        # Never a moment without a complete folder: old aside, new in, then old deleted.
        old = _moved_aside(output_dir)
        os.replace(output_dir, old)
        try:
            os.replace(staging, output_dir)
        except BaseException:
            os.replace(old, output_dir)
            raise
        shutil.rmtree(old)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, folder, or Hub repo id")
    parser.add_argument("--output", required=True, help="folder to write the converted model and processor to")
    parser.add_argument("--reparameterize", action="store_true", help="save the fused inference form")
    parser.add_argument("--no-verify", action="store_true", help="skip the check against a reference implementation")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload the converted folder to this Hub repo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from .processing_mobileclip import MobileCLIPProcessor

    try:
        # Everything that can refuse the output is checked before the (slow) conversion.
        check_source_outside_output(args.checkpoint, args.output)
        recover_output(args.output)
        check_output(args.output, args.overwrite)
        checkpoint = resolve_checkpoint(args.checkpoint)
        check_source_outside_output(checkpoint, args.output)
        conversion = convert(args.variant, checkpoint, args.reparameterize, not args.no_verify)
        model, processor = conversion.model, MobileCLIPProcessor.from_variant(args.variant)
        if isinstance(model, MobileCLIPVisionModelWithProjection):
            processor = processor.image_processor  # an image tower needs no tokenizer
        card = conversion_card(args.variant, args.checkpoint, conversion, args.push_to_hub or args.output)
        save_converted(model, processor, args.output, overwrite=args.overwrite, card=card)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    logger.info("Wrote %s to %s", type(model).__name__, args.output)
    if args.push_to_hub:
        import huggingface_hub

        huggingface_hub.create_repo(args.push_to_hub, exist_ok=True)
        huggingface_hub.upload_folder(folder_path=args.output, repo_id=args.push_to_hub)
        logger.info("Uploaded to %s", args.push_to_hub)


if __name__ == "__main__":
    main()


__all__ = [
    "Conversion",
    "check_output",
    "check_source_outside_output",
    "convert",
    "convert_checkpoint",
    "conversion_card",
    "convert_state_dict",
    "detect_format",
    "load_checkpoint",
    "load_strict",
    "recover_output",
    "resolve_checkpoint",
    "save_converted",
    "unwrap_state_dict",
    "verify",
]
