"""The converter as users run it: files, folders, the CLI, verification, strictness and atomic output."""

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip import convert as convert_module
from modeling_mobileclip.convert import convert_checkpoint, main, save_converted, verify

from conftest import image_inputs, randomize_, text_inputs, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert os.listdir(tmp_path) == ["out"], "temporary folders left behind"
    # The model card: Apple's licence, the source and the parity that was checked.
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "apple-amlr" and card.data.pipeline_tag == "zero-shot-image-classification"
    assert f"from `{path}` (open_clip format)" in card.text and "fused (re-parameterised)" in card.text
    assert re.search(r"against open_clip on the same weights: max abs diff text \d\.\de-\d\d, image", card.text)


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


# --------------------------------------------------------------------------------------------------------------------
# The output folder: checked first, never holding the source, replaced atomically


@pytest.fixture
def fake_conversion(monkeypatch):
    """`convert_checkpoint` replaced by a tiny model, recording whether the conversion ran."""
    calls = []

    def convert(variant, checkpoint, *args, **kwargs):
        calls.append(checkpoint)
        return MobileCLIPModel(tiny_config())

    monkeypatch.setattr(convert_module, "convert_checkpoint", convert)
    return calls


def test_checkpoint_inside_the_output_is_refused(tmp_path, fake_conversion, capsys):
    out = tmp_path / "out"
    out.mkdir()
    checkpoint = out / "mobileclip2_s0.pt"
    checkpoint.write_bytes(b"the only copy")
    for source in (checkpoint, out):
        with pytest.raises(SystemExit) as exit_info:
            convert_module.main(["--variant", "mobileclip2-s0", "--checkpoint", str(source), "--output", str(out),
                                 "--overwrite"])
        assert exit_info.value.code == 2 and "lies inside the output folder" in capsys.readouterr().err
    assert checkpoint.read_bytes() == b"the only copy" and not fake_conversion


def test_output_is_checked_before_converting(tmp_path, fake_conversion, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    (tmp_path / "ckpt.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        convert_module.main(["--variant", "mobileclip2-s0", "--checkpoint", str(tmp_path / "ckpt.pt"), "--output",
                             str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert not fake_conversion


DRIVER = textwrap.dedent(
    """
    import os, shutil, signal, sys
    import torch
    from modeling_mobileclip import MobileCLIPModel
    from modeling_mobileclip.convert import save_converted
    from modeling_mobileclip.testing_utils import tiny_config

    output, kill_at = sys.argv[1], sys.argv[2]
    model = MobileCLIPModel(tiny_config())
    with torch.no_grad():
        model.logit_scale.fill_(2.0)  # the new model
    real_replace, real_rmtree, replaces = os.replace, shutil.rmtree, []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def beside_output(path):  # the output folder or a sibling, not a file written inside the temporary folder
        return os.path.dirname(os.path.abspath(path)) == os.path.dirname(os.path.abspath(output))

    def replace(src, dst, **kwargs):
        if not beside_output(dst):
            return real_replace(src, dst, **kwargs)
        replaces.append(dst)
        if kill_at == f"before-replace-{len(replaces)}":
            die()
        real_replace(src, dst, **kwargs)
        if kill_at == f"after-replace-{len(replaces)}":
            die()

    def rmtree(path, *args, **kwargs):
        if kill_at == "during-rmtree" and beside_output(path):  # half deleted: one file gone
            os.remove(os.path.join(path, sorted(os.listdir(path))[0]))
            die()
        real_rmtree(path, *args, **kwargs)

    os.replace, shutil.rmtree = replace, rmtree
    save_converted(model, None, output, overwrite=True)
    """
)


@pytest.mark.parametrize("kill_at", ["before-replace-1", "after-replace-1", "during-rmtree"])
def test_kill_while_replacing_the_output_leaves_a_complete_model(tmp_path, kill_at):
    out = tmp_path / "out"
    old = MobileCLIPModel(tiny_config())
    with torch.no_grad():
        old.logit_scale.fill_(1.0)
    old.save_pretrained(out)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # The package from this checkout (first on the path), as the tests import it, installed or not.
    path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(driver), str(out), kill_at], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]

    convert_module.recover_output(str(out))  # what the next run does first
    model = MobileCLIPModel.from_pretrained(out)  # complete: loads, all weights present
    assert float(model.logit_scale.detach()) in (1.0, 2.0)
    assert sorted(os.listdir(tmp_path)) == ["driver.py", "out"], "leftovers of the killed run"
