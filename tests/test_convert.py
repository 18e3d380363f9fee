"""The converter as users run it: files, folders, the CLI, verification, strictness and atomic output."""

import os

import pytest
import torch
from conftest import image_inputs, randomize_, text_inputs

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip import convert as convert_module
from modeling_mobileclip.convert import convert_checkpoint, main, save_converted, verify


@pytest.fixture(scope="module")
def open_clip_s0(tmp_path_factory):
    """MobileCLIP2-S0 in open_clip's layout, saved as a `.pt` file (random weights, random BN statistics)."""
    open_clip = pytest.importorskip("open_clip")
    reference = randomize_(open_clip.create_model("MobileCLIP2-S0", pretrained=None))
    path = tmp_path_factory.mktemp("ckpt") / "mobileclip2_s0.pt"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_cli_converts_verifies_and_writes_model_and_processor(open_clip_s0, tmp_path, caplog):
    reference, path = open_clip_s0
    caplog.set_level("INFO")
    main(
        [
            "--variant",
            "mobileclip2-s0",
            "--checkpoint",
            str(path),
            "--output",
            str(tmp_path / "out"),
            "--reparameterize",
        ]
    )
    assert "Verified against open_clip" in caplog.text
    model = MobileCLIPModel.from_pretrained(tmp_path / "out").eval()
    assert model.config.vision_config.reparameterized and model.config.variant == "mobileclip2-s0"
    processor = MobileCLIPProcessor.from_pretrained(tmp_path / "out")
    assert processor.image_processor.crop_size == {"height": 256, "width": 256}
    input_ids, pixel_values = text_inputs(2), image_inputs(2)
    with torch.no_grad():
        assert (
            model.get_image_features(pixel_values).pooler_output - reference.encode_image(pixel_values)
        ).abs().max() < 1e-5
        assert (model.get_text_features(input_ids).pooler_output - reference.encode_text(input_ids)).abs().max() < 1e-5
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".convert-")]


def test_checkpoint_folder_and_safetensors(open_clip_s0, tmp_path):
    from safetensors.torch import save_file

    reference, _ = open_clip_s0
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("a Hub repo snapshot")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, folder / "open_clip_model.safetensors")
    model = convert_checkpoint("mobileclip2-s0", str(folder))
    assert torch.equal(model.logit_scale, reference.logit_scale.detach())


def test_apple_checkpoint_file_is_verified_against_apple_code(tmp_path, caplog):
    mobileclip = pytest.importorskip("mobileclip")
    reference = mobileclip.create_model_and_transforms("mobileclip_s0", pretrained=None, reparameterize=False)[0]
    path = tmp_path / "mobileclip_s0.pt"
    torch.save(randomize_(reference).state_dict(), path)
    caplog.set_level("INFO")
    convert_checkpoint("mobileclip-s0", str(path))
    assert "Verified against Apple's mobileclip" in caplog.text


def test_strict_errors_list_missing_and_unexpected_keys(open_clip_s0):
    reference, _ = open_clip_s0
    state_dict = dict(reference.state_dict())
    del state_dict["text.ln_final.weight"]
    state_dict["visual.trunk.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \(1\): text_model.final_layer_norm.weight") as error:
        convert_checkpoint("mobileclip2-s0", state_dict)
    assert "vision_model.extra.weight" in str(error.value)
    with pytest.raises(ValueError, match="shape mismatches"):
        convert_checkpoint("mobileclip2-s2", reference.state_dict(), verify_reference=False)
    with pytest.raises(ValueError, match="Unrecognised checkpoint layout"):
        convert_checkpoint("mobileclip2-s0", {"foo.weight": torch.zeros(1)})


def test_verification_catches_a_wrong_conversion(open_clip_s0):
    reference, _ = open_clip_s0
    model = convert_checkpoint("mobileclip2-s0", reference.state_dict(), verify_reference=False)
    with torch.no_grad():
        model.text_model.final_layer_norm.bias.add_(1e-2)
    with pytest.raises(ValueError, match="differs from open_clip"):
        verify(model, reference, "open_clip")


def test_output_is_written_atomically(open_clip_s0, tmp_path, monkeypatch):
    reference, _ = open_clip_s0
    model = convert_checkpoint("mobileclip2-s0", reference.state_dict(), verify_reference=False)
    processor = MobileCLIPProcessor.from_variant("mobileclip2-s0")
    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(processor, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_converted(model, processor, str(out))
    assert os.listdir(tmp_path) == [], "an interrupted conversion left files behind"

    monkeypatch.undo()
    save_converted(model, processor, str(out))
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_converted(model, processor, str(out))
    save_converted(model, processor, str(out), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_cli_rejects_unknown_variant(capsys):
    with pytest.raises(SystemExit):
        main(["--variant", "mobileclip-s9", "--checkpoint", "x", "--output", "y"])
    assert "invalid choice" in capsys.readouterr().err


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no weights here")
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        convert_module.resolve_checkpoint(str(tmp_path))
