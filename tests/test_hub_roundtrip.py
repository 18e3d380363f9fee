"""The project's Hub code paths against a local Hub (tests/hub_server.py, on 127.0.0.1): converting with
--push-to-hub, loading by repo id (revisions, remote code, processor, tokenizer, pipelines), building a reinforced
dataset from a streamed Hub dataset with a Hub teacher and pushing it, streaming it back (parquet and DataCompDR
layout), and training from it on two processes with push_to_hub.

huggingface_hub, transformers and datasets read HF_ENDPOINT, HF_HOME and HF_TOKEN when imported, and the suite runs
offline (conftest.py), so every client runs in a subprocess with the local Hub's environment and a clean cache; this
process holds the server and checks what reached it. Scripts run in the order of the module's fixtures: publish the
model, load it, build and push the dataset, stream it, train on it.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor, MobileCLIPTokenizer
from modeling_mobileclip.configuration_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig

from conftest import randomize_, tiny_config
from hub_server import USER, HubServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
MODEL, CHECKPOINT = f"{USER}/mobileclip-tiny", f"{USER}/open-clip-tiny"
INPUT, REINFORCED, TRAINED = f"{USER}/messy", f"{USER}/messy-reinforced", f"{USER}/trained"
DATACOMPDR = {"images": f"{USER}/datacompdr-images", "urls": f"{USER}/datacompdr-urls"}
LABELS = ["cat", "dog", "a red table"]
# A released-variant entry (configuration_mobileclip.VARIANTS) small enough for CPU tests; registered only in the
# converting subprocess, so that this process's VARIANTS stay the released ones.
TINY_VARIANT = {
    "vision": {"architecture": "fastvit_mci0", "image_size": 64, "projection_dim": 24,
               "model_args": {"layers": [1, 1, 1, 1], "embed_dims": [16, 16, 32, 64]}},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "use_causal_mask": False, "projection_dim": 24},
    "projection_dim": 24,
    "preprocess": {"image_mean": None, "image_std": None, "resample": "bilinear"},
}
# Our text-tower names -> open_clip's (the inverse of convert.OPEN_CLIP_TEXT_KEY_MAPPING).
TO_OPEN_CLIP_TEXT = [
    (r"^text_model\.token_embedding\.", "text.token_embedding."),
    (r"^text_model\.positional_embedding$", "text.positional_embedding"),
    (r"^text_model\.layers\.", "text.transformer.resblocks."),
    (r"^text_model\.final_layer_norm\.", "text.ln_final."),
    (r"\.layer_norm1\.", ".ln_1."),
    (r"\.self_attn\.qkv_proj\.(weight|bias)$", r".attn.in_proj_\1"),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
    (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
]


# ---------------------------------------------------------------------------------------------------------------------
# The server and the client processes


@pytest.fixture(scope="module")
def hub():
    server = HubServer().start()
    yield server
    server.stop()


def client_env(hub: HubServer, home, pythonpath: bool = True) -> dict:
    """The environment of a client process: only the local Hub, a fresh cache, online, no Xet, bounded waits."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and "proxy" not in k.lower()
           and k != "PYTHONPATH"}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_TOKEN=hub.token, HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="30", HF_HUB_DOWNLOAD_TIMEOUT="60",
               NO_PROXY="127.0.0.1,localhost", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="2")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([REPO, TESTS])
    return env


def run_client(hub: HubServer, tmp, name: str, code: str, *, home=None, cwd=REPO, pythonpath=True, timeout=300,
               command=None) -> dict:
    """Runs `code` (reading `OUT`, the path of a JSON file to write its results to) in a fresh Python process."""
    script, out = tmp / f"{name}.py", tmp / f"{name}.json"
    script.write_text(f"OUT = {str(out)!r}\n" + textwrap.dedent(code))
    env = client_env(hub, home or tmp / f"{name}-home", pythonpath)
    try:
        result = subprocess.run(command or [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{name} timed out after {timeout} s; last requests: {hub.requests[-20:]}\n{err.stderr}")
    if result.returncode != 0:
        failed = [r for r in hub.requests if r[2] >= 400][-20:]
        pytest.fail(f"{name} failed ({result.returncode}).\nstdout: {result.stdout[-2000:]}\nstderr: "
                    f"{result.stderr[-6000:]}\nfailed requests: {failed}")
    return json.loads(out.read_text()) if out.exists() else {}


def requested(hub: HubServer, method: str, pattern: str) -> list[tuple[str, str, int]]:
    return [r for r in hub.requests if r[0] == method and re.search(pattern, r[1])]


# ---------------------------------------------------------------------------------------------------------------------
# Model: an open_clip-layout checkpoint on the Hub, converted with --push-to-hub, then a branch and a tag


def tiny_variant_config() -> MobileCLIPConfig:
    """What MobileCLIPConfig.from_variant("mobileclip-tiny") builds in the converting process."""
    return MobileCLIPConfig(text_config=MobileCLIPTextConfig(**TINY_VARIANT["text"]),
                            vision_config=MobileCLIPVisionConfig(**TINY_VARIANT["vision"]), projection_dim=24)


def to_open_clip(model: MobileCLIPModel) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        if key == "text_projection.weight":
            out["text.text_projection"] = value.t().contiguous()
        elif key.startswith("vision_model."):
            out["visual.trunk." + key.removeprefix("vision_model.")] = value
        elif key.startswith("visual_projection."):
            out["visual.trunk.head.fc." + key.removeprefix("visual_projection.")] = value
        elif key == "logit_scale":
            out[key] = value
        else:
            for pattern, replacement in TO_OPEN_CLIP_TEXT:
                key = re.sub(pattern, replacement, key)
            out[key] = value
    return out


def photo(seed: int, size=(96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """Uploads an open_clip checkpoint, converts it from its repo id with `--push-to-hub`, tags that commit v1.0,
    pushes other weights to a branch v2 and one more file to main. Returns local copies to compare with."""
    from safetensors.torch import save_file

    tmp = tmp_path_factory.mktemp("publish")
    torch.manual_seed(0)
    source = randomize_(MobileCLIPModel(tiny_variant_config()))
    save_file(to_open_clip(source), tmp / "open_clip_model.safetensors")
    tokens = MobileCLIPTokenizer()(["a photo of a cat", "a dog"], padding="max_length", truncation=True,
                                   return_tensors="pt")
    inputs = {"input_ids": tokens["input_ids"],
              "pixel_values": torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))}
    torch.save(inputs, tmp / "inputs.pt")
    photo(0).save(tmp / "photo.png")
    result = run_client(hub, tmp, "publish", f"""
        import json, sys, torch
        from huggingface_hub import HfApi
        import modeling_mobileclip.configuration_mobileclip as configuration
        from modeling_mobileclip import MobileCLIPModel
        configuration.VARIANTS["mobileclip-tiny"] = json.loads({json.dumps(TINY_VARIANT)!r})

        api = HfApi()
        api.create_repo({CHECKPOINT!r})
        api.upload_file(path_or_fileobj={str(tmp / "open_clip_model.safetensors")!r},
                        path_in_repo="open_clip_model.safetensors", repo_id={CHECKPOINT!r})
        sys.argv = ["convert", "--variant", "mobileclip-tiny", "--checkpoint", {CHECKPOINT!r},
                    "--output", {str(tmp / "converted")!r}, "--push-to-hub", {MODEL!r}]
        import runpy
        runpy.run_module("modeling_mobileclip.convert", run_name="__main__")

        api.create_tag({MODEL!r}, tag="v1.0")
        api.create_branch({MODEL!r}, branch="v2")
        model = MobileCLIPModel.from_pretrained({str(tmp / "converted")!r})
        with torch.no_grad():
            model.text_projection.weight.mul_(-1)
            model.logit_scale.fill_(2.0)
        model.save_pretrained({str(tmp / "v2")!r})
        model.push_to_hub({MODEL!r}, revision="v2")
        api.upload_file(path_or_fileobj=b"later notes\\n", path_in_repo="NOTES.md", repo_id={MODEL!r})
        refs = api.list_repo_refs({MODEL!r})
        json.dump({{"branches": {{b.name: b.target_commit for b in refs.branches}},
                   "tags": {{t.name: t.target_commit for t in refs.tags}}}}, open(OUT, "w"))
        """)
    return {"tmp": tmp, "converted": tmp / "converted", "v2": tmp / "v2", "source": source, "refs": result,
            "inputs": inputs}


@torch.no_grad()
def embeddings(model: MobileCLIPModel, inputs: dict) -> dict[str, list]:
    model.eval()
    return {"text": model.get_text_features(inputs["input_ids"]).pooler_output.tolist(),
            "image": model.get_image_features(inputs["pixel_values"]).pooler_output.tolist()}


def test_convert_from_a_repo_id_and_push_to_hub(hub, published):
    refs = published["refs"]
    assert refs["tags"]["v1.0"] != refs["branches"]["main"] != refs["branches"]["v2"]
    # The checkpoint was read from its repo, by the converter's own Hub path.
    assert requested(hub, "GET", rf"^/{CHECKPOINT}/resolve/main/open_clip_model.safetensors")
    # The pushed commit holds exactly the converted folder (and the Hub's initial .gitattributes), byte for byte.
    pushed = hub.files(MODEL, revision="v1.0")
    local = {p: (published["converted"] / p).read_bytes() for p in os.listdir(published["converted"])}
    assert pushed.pop(".gitattributes") and pushed == local
    assert {"model.safetensors", "config.json", "modeling_mobileclip.py", "tokenizer.json"} <= set(local)
    assert "model.safetensors" in hub.lfs_paths(MODEL, revision="v1.0")  # uploaded through Git LFS
    assert json.loads(pushed["config.json"])["variant"] == "mobileclip-tiny"
    converted = MobileCLIPModel.from_pretrained(published["converted"])
    expected = embeddings(published["source"], published["inputs"])
    for kind, values in embeddings(converted, published["inputs"]).items():
        np.testing.assert_allclose(values, expected[kind], rtol=0, atol=1e-6)
    assert hub.files(MODEL)["NOTES.md"] == b"later notes\n" and "NOTES.md" not in hub.files(MODEL, revision="v1.0")


# ---------------------------------------------------------------------------------------------------------------------
# Loading by repo id: revisions, processor, tokenizer, pipelines; remote code without the package


@pytest.fixture(scope="module")
def loaded(hub, published):
    tmp = published["tmp"]
    return run_client(hub, tmp, "load", f"""
        import json, os, torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer, pipeline
        import modeling_mobileclip  # registers the Auto classes

        inputs = torch.load({str(tmp / "inputs.pt")!r})
        out = {{}}
        for revision in (None, "v1.0", "v2"):
            model = AutoModel.from_pretrained({MODEL!r}, revision=revision).eval()
            with torch.no_grad():
                out[str(revision)] = {{
                    "class": type(model).__name__,
                    "text": model.get_text_features(inputs["input_ids"]).pooler_output.tolist(),
                    "image": model.get_image_features(inputs["pixel_values"]).pooler_output.tolist()}}
        # The commit each revision resolved to, as the download cache recorded it.
        refs = os.path.join(os.environ["HF_HOME"], "hub", "models--{MODEL.replace("/", "--")}", "refs")
        for revision in ("main", "v1.0", "v2"):
            out[revision if revision != "main" else "None"]["commit"] = open(os.path.join(refs, revision)).read()
        processor = AutoProcessor.from_pretrained({MODEL!r})
        tokenizer = AutoTokenizer.from_pretrained({MODEL!r})
        image_processor = AutoImageProcessor.from_pretrained({MODEL!r})
        image = Image.open({str(tmp / "photo.png")!r})
        out["classes"] = [type(x).__name__ for x in (processor, tokenizer, image_processor)]
        out["input_ids"] = tokenizer(["a photo of a cat"])["input_ids"]
        out["pixel_values"] = processor(images=image, return_tensors="pt")["pixel_values"].tolist()
        classifier = pipeline("zero-shot-image-classification", model={MODEL!r})
        out["zero_shot"] = classifier(image, candidate_labels={LABELS!r})
        extractor = pipeline("image-feature-extraction", model={MODEL!r})
        out["features"] = extractor(image)
        json.dump(out, open(OUT, "w"))
        """)


def test_from_pretrained_by_repo_id_branch_and_tag(published, loaded):
    refs, inputs = published["refs"], published["inputs"]
    original = embeddings(MobileCLIPModel.from_pretrained(published["converted"]), inputs)
    changed = embeddings(MobileCLIPModel.from_pretrained(published["v2"]), inputs)
    assert not np.allclose(original["text"], changed["text"])
    for revision, commit, expected in (("None", refs["branches"]["main"], original),
                                       ("v1.0", refs["tags"]["v1.0"], original),
                                       ("v2", refs["branches"]["v2"], changed)):
        result = loaded[revision]
        assert result["class"] == "MobileCLIPModel" and result["commit"] == commit, revision
        for kind in ("text", "image"):
            np.testing.assert_allclose(result[kind], expected[kind], rtol=0, atol=1e-6, err_msg=revision)


def test_processor_tokenizer_and_pipelines_by_repo_id(published, loaded):
    assert loaded["classes"] == ["MobileCLIPProcessor", "MobileCLIPTokenizer", "MobileCLIPImageProcessor"]
    processor = MobileCLIPProcessor.from_pretrained(published["converted"])
    image = Image.open(published["tmp"] / "photo.png")
    assert loaded["input_ids"] == processor.tokenizer(["a photo of a cat"])["input_ids"]
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(loaded["pixel_values"], pixel_values.numpy(), rtol=0, atol=1e-6)

    model = MobileCLIPModel.from_pretrained(published["converted"]).eval()
    texts = [f"This is a photo of {label}." for label in LABELS]  # the pipeline's default template
    with torch.no_grad():
        probs = model(**processor(images=image, text=texts, return_tensors="pt")).logits_per_image.softmax(-1)[0]
        image_embeds = model(pixel_values=pixel_values).image_embeds
    expected = sorted(zip(probs.tolist(), LABELS), reverse=True)
    assert [r["label"] for r in loaded["zero_shot"]] == [label for _, label in expected]
    np.testing.assert_allclose([r["score"] for r in loaded["zero_shot"]], [p for p, _ in expected], rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(np.array(loaded["features"]), image_embeds.numpy(), rtol=1e-5, atol=1e-6)


def test_trust_remote_code_by_repo_id_without_the_package(hub, published, tmp_path):
    """A user without this package: the repo's own code loads model, processor and tokenizer from the repo id."""
    inputs = published["inputs"]
    result = run_client(hub, tmp_path, "remote", f"""
        import json, sys
        sys.modules["modeling_mobileclip"] = None  # importing the package now fails: only the repo's code can run
        import torch
        from transformers import AutoModel, AutoProcessor, AutoTokenizer

        model = AutoModel.from_pretrained({MODEL!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({MODEL!r}, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained({MODEL!r}, trust_remote_code=True)
        inputs = torch.load({str(published["tmp"] / "inputs.pt")!r})
        with torch.no_grad():
            ids = tokenizer(["a photo of a cat", "a dog"], padding="max_length", truncation=True, return_tensors="pt")
            text = model.get_text_features(ids["input_ids"])
            image = model.get_image_features(inputs["pixel_values"])
        json.dump({{"module": type(model).__module__, "classes": [type(processor).__name__, type(tokenizer).__name__],
                   "text": text.pooler_output.tolist(), "image": image.pooler_output.tolist()}}, open(OUT, "w"))
        """, cwd=tmp_path, pythonpath=False)
    assert result["module"].startswith("transformers_modules."), result["module"]
    assert result["classes"] == ["MobileCLIPProcessor", "MobileCLIPTokenizer"]
    expected = embeddings(MobileCLIPModel.from_pretrained(published["converted"]), inputs)
    for kind in ("text", "image"):
        np.testing.assert_allclose(result[kind], expected[kind], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Datasets: a Hub dataset reinforced with a Hub teacher and pushed; streamed back as parquet and as DataCompDR


@pytest.fixture(scope="module")
def reinforced(hub, published, tmp_path_factory):
    """`Dataset.push_to_hub` of the messy image-text set, then `python -m dataset_builder <its repo id>` (streamed),
    teacher `hf:<model repo id>`, `--format datacompdr --push-to-hub`."""
    tmp = tmp_path_factory.mktemp("reinforce")
    out = tmp / "out"
    argv = [INPUT, str(out), "--teachers", f"hf:{MODEL}", "--captioner", "none", "--syn-captions-column", "syn",
            "--key-column", "uid", "--num-augmentations", "2", "--num-synthetic-captions", "2",
            "--batch-size", "4", "--num-workers", "0", "--format", "datacompdr",
            "--no-progress", "--push-to-hub", REINFORCED]
    run_client(hub, tmp, "reinforce", f"""
        import runpy, sys
        from reinforce_fixtures import messy_dataset

        messy_dataset(with_syn=True).push_to_hub({INPUT!r}, num_shards=2)  # 2 shards in, 2 out
        sys.argv = ["dataset_builder", *{argv!r}]
        runpy.run_module("dataset_builder", run_name="__main__")
        """, timeout=400)
    return out


def local_rows(out) -> dict[str, dict]:
    table = pq.read_table(out / "data")
    return {row["key"]: row for row in table.to_pylist()}


def test_dataset_builder_from_a_hub_dataset_with_a_hub_teacher_pushes_the_dataset(hub, published, reinforced):
    from dataset_builder.teachers import TransformersTeacher

    # The input went up through Dataset.push_to_hub (parquet through LFS) and was streamed from the server.
    assert any(p.endswith(".parquet") for p in hub.lfs_paths(INPUT, "dataset"))
    assert requested(hub, "GET", rf"^/datasets/{INPUT}/resolve/[0-9a-f]{{40}}/data/train-[^/]+\.parquet")
    # What was pushed is the finished folder, byte for byte, without the build's own state.
    pushed = hub.files(REINFORCED, "dataset")
    pushed.pop(".gitattributes")
    local = {}
    for root, dirs, files in os.walk(reinforced):
        dirs[:] = [d for d in dirs if d != ".build"]
        for name in files:
            path = os.path.relpath(os.path.join(root, name), reinforced)
            if not re.match(r"data/\.tmp-", path):
                local[path] = open(os.path.join(root, name), "rb").read()
    assert sorted(pushed) == sorted(local) and pushed == local
    assert sorted(p for p in pushed if p.startswith("data/")) == [f"data/train-{i:05d}-of-00002.parquet"
                                                                   for i in range(2)]
    assert {p for p in pushed if p.endswith((".parquet", ".tar"))} <= hub.lfs_paths(REINFORCED, "dataset")
    meta = json.loads(pushed["reinforcement.json"])
    assert [t["name"] for t in meta["teachers"]] == [f"hf:{MODEL}"] and meta["embedding_dim"] == 24
    # The teacher loaded by repo id embeds like the converted folder: stored caption embeddings are its own.
    teacher = TransformersTeacher.from_pretrained(str(published["converted"]))
    rows = sorted(local_rows(reinforced).values(), key=lambda r: r["key"])
    assert len(rows) == 9
    expected = teacher.embed_texts([r["caption"] for r in rows])
    stored = torch.tensor([r["text_emb"][0] for r in rows], dtype=torch.float32)
    torch.testing.assert_close(stored, expected.float(), atol=2e-3, rtol=0)


def without_images(out, folder):
    """The reinforced folder's rows with `image` dropped and `image_ref` set, like DataCompDR-12M (URLs only)."""
    import pyarrow as pa

    os.makedirs(folder / "data")
    for shard in sorted(os.listdir(out / "data")):
        table = pq.read_table(out / "data" / shard)
        table = table.drop_columns(["image"]).append_column("image_ref", pa.array(
            [f"https://example.com/{key}.jpg" for key in table["key"].to_pylist()]))
        pq.write_table(table, folder / "data" / shard)
    return folder


@pytest.fixture(scope="module")
def streamed(hub, reinforced):
    """Streams the pushed dataset back with `load_dataset(repo_id, streaming=True)`, and DataCompDR tars with
    `stream_datacompdr_from_hub`: the builder's own (`--format datacompdr`, with images) and URL-only ones."""
    from dataset_builder.datacompdr import write_datacompdr

    tmp = reinforced.parent
    urls = without_images(reinforced, tmp / "urls")
    write_datacompdr(str(urls), str(urls / "datacompdr"))
    folders = {"images": reinforced / "datacompdr", "urls": urls / "datacompdr"}
    return run_client(hub, tmp, "stream", f"""
        import json, numpy as np
        import datasets
        from huggingface_hub import HfApi
        from dataset_builder import stream_datacompdr_from_hub

        datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
        def py(value):  # JSON-ready: arrays as lists, image structs as their bytes in hex
            if isinstance(value, np.ndarray):
                return py(value.tolist())
            if isinstance(value, (list, tuple)):
                return [py(v) for v in value]
            if isinstance(value, dict) and "bytes" in value:
                return value["bytes"].hex() if value["bytes"] is not None else None
            if isinstance(value, np.generic):
                return value.item()
            return value

        def plain(row):
            return {{k: py(v) for k, v in row.items()}}

        stream = datasets.load_dataset({REINFORCED!r}, split="train", streaming=True)
        stream = stream.cast_column("image", datasets.Image(decode=False))
        out = {{"streaming": isinstance(stream, datasets.IterableDataset), "num_shards": stream.num_shards,
               "parquet": [plain(r) for r in stream]}}
        api = HfApi()
        for layout, repo in {DATACOMPDR!r}.items():
            api.create_repo(repo, repo_type="dataset")
            folder = {{"images": {str(folders["images"])!r}, "urls": {str(folders["urls"])!r}}}[layout]
            api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=folder)
            try:
                rows = stream_datacompdr_from_hub(repo).cast_column("image", datasets.Image(decode=False))
                out[layout] = [plain(r) for r in rows]
            except Exception as err:  # reported by the test of this layout
                out[layout] = f"{{type(err).__name__}}: {{err}}"
        json.dump(out, open(OUT, "w"))
        """)


def test_load_dataset_streaming_of_the_pushed_dataset(hub, reinforced, streamed):
    assert streamed["streaming"] and streamed["num_shards"] == 2
    local = local_rows(reinforced)
    rows = {r["key"]: r for r in streamed["parquet"]}
    assert sorted(rows) == sorted(local) and len(streamed["parquet"]) == len(local)
    for key, row in local.items():
        got = rows[key]
        assert got["image"] == row["image"]["bytes"].hex()
        for column in ("caption", "syn_captions", "aug_params", "image_emb", "text_emb"):
            assert got[column] == row[column], (key, column)
    assert requested(hub, "GET", rf"^/datasets/{REINFORCED}/resolve/[0-9a-f]{{40}}/data/train-00000-of-00002\.parquet")


def check_datacompdr(local_folder, streamed_rows):
    from dataset_builder.datacompdr import load_datacompdr

    assert isinstance(streamed_rows, list), streamed_rows  # else the error the stream raised
    import datasets

    local = load_datacompdr(str(local_folder)).cast_column("image", datasets.Image(decode=False))
    local = {r["key"]: r for r in local}
    rows = {r["key"]: r for r in streamed_rows}
    assert sorted(rows) == sorted(local) and len(local) == 9
    for key, row in local.items():
        got = rows[key]
        for column in ("caption", "syn_captions", "aug_params", "image_ref"):
            assert got[column] == row[column], (key, column)
        assert got["image"] == (row["image"]["bytes"].hex() if row["image"] else None)
        for column in ("image_emb", "text_emb"):
            np.testing.assert_array_equal(np.array(got[column], np.float32), np.array(row[column], np.float32))


def test_stream_datacompdr_from_hub(reinforced, streamed):
    """URL-only shards, as DataCompDR-12M is published."""
    check_datacompdr(reinforced.parent / "urls" / "datacompdr", streamed["urls"])


def test_stream_datacompdr_from_hub_with_images_of_several_formats(reinforced, streamed):
    """The builder's own `--format datacompdr` output: the messy input has JPEG and PNG images."""
    check_datacompdr(reinforced / "datacompdr", streamed["images"])


# ---------------------------------------------------------------------------------------------------------------------
# Training: the reinforced dataset's repo id, streamed on two processes, and push_to_hub


def test_train_streams_the_hub_dataset_on_two_processes_and_pushes(hub, reinforced, tmp_path):
    from safetensors.torch import load, load_file

    tiny_config().save_pretrained(tmp_path / "tiny")  # config only: random initialisation
    output = tmp_path / "run"
    config = {"model": str(tmp_path / "tiny"), "train_dataset": REINFORCED, "dataset_cache_dir": str(tmp_path / "c"),
              "output_dir": str(output), "num_workers": 0, "global_batch_size": 4, "train_steps": 2,
              "warmup_steps": 1, "lr": 1e-4, "mixed_precision": "no", "save_every": 0, "log_every": 1,
              "shuffle_buffer_size": 4, "report_to": ["none"], "push_to_hub": True, "hub_model_id": TRAINED}
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    before = len(hub.requests)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
               "no", os.path.join(REPO, "train", "train.py"), "--config", str(tmp_path / "config.yaml")]
    os.environ["ACCELERATE_USE_CPU"] = "1"  # read by client_env's copy of this environment
    try:
        run_client(hub, tmp_path, "train", "", command=command, timeout=500)
    finally:
        del os.environ["ACCELERATE_USE_CPU"]
    records = [json.loads(line) for line in open(output / "metrics.jsonl")]
    run_config = next(r["config"] for r in records if "config" in r)
    assert run_config["world_size"] == 2 and run_config["train_dataset"] == REINFORCED
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    # Both ranks streamed parquet shards from the server (ranged reads), and read reinforcement.json there.
    during = hub.requests[before:]
    parquet = {r[1] for r in during if re.search(rf"^/datasets/{REINFORCED}/resolve/.*\.parquet", r[1])}
    assert len(parquet) >= 2, parquet
    assert any("reinforcement.json" in r[1] for r in during)
    # The pushed model is the one saved at the end of training, with its processor.
    pushed = hub.files(TRAINED)
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= set(pushed), sorted(
        pushed)
    remote, saved = load(pushed["model.safetensors"]), load_file(output / "model.safetensors")
    assert remote.keys() == saved.keys()
    for name, tensor in saved.items():
        assert torch.equal(remote[name], tensor), name
    assert json.loads(pushed["config.json"])["architectures"] == ["MobileCLIPModel"]


# ---------------------------------------------------------------------------------------------------------------------
# The server itself: the protocol details the clients rely on


def test_server_errors_ranges_and_conflicts(hub):
    def call(method, path, body=None, headers=None):
        request = urllib.request.Request(hub.url + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {hub.token}", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    status, _, body = call("POST", "/api/repos/create", json.dumps({"name": "proto"}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["url"] == f"{hub.url}/{USER}/proto"
    assert call("POST", "/api/repos/create", json.dumps({"name": "proto"}).encode())[0] == 409
    head = json.loads(call("GET", f"/api/models/{USER}/proto")[2])["sha"]
    lines = [{"key": "header", "value": {"summary": "add", "parentCommit": head}},
             {"key": "file", "value": {"path": "a/b.txt", "content": "MDEyMzQ1Njc4OQ==", "encoding": "base64"}}]
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    status, _, body = call("POST", f"/api/models/{USER}/proto/commit/main", ndjson)
    assert status == 200 and len(json.loads(body)["commitOid"]) == 40
    assert call("POST", f"/api/models/{USER}/proto/commit/main", ndjson)[0] == 412  # stale parent commit
    status, headers, body = call("GET", f"/{USER}/proto/resolve/main/a/b.txt", headers={"Range": "bytes=2-4"})
    assert (status, body, headers["Content-Range"]) == (206, b"234", "bytes 2-4/10")
    assert headers["X-Repo-Commit"] == json.loads(call("GET", f"/api/models/{USER}/proto")[2])["sha"]
    assert call("GET", f"/{USER}/proto/resolve/main/a/b.txt", headers={"Range": "bytes=-3"})[2] == b"789"
    assert call("GET", f"/{USER}/proto/resolve/main/a/b.txt", headers={"Range": "bytes=10-"})[0] == 416
    for path, code in ((f"/{USER}/nope/resolve/main/x", "RepoNotFound"),
                       (f"/{USER}/proto/resolve/nope/a/b.txt", "RevisionNotFound"),
                       (f"/{USER}/proto/resolve/main/x", "EntryNotFound"),
                       (f"/api/models/{USER}/proto/tree/main/x%2Fy", "EntryNotFound")):
        status, headers, _ = call("GET", path)
        assert (status, headers.get("X-Error-Code")) == (404, code), path
    tree = json.loads(call("GET", f"/api/models/{USER}/proto/tree/main/a")[2])
    assert [(e["type"], e["path"], e["size"]) for e in tree] == [("file", "a/b.txt", 10)]
    assert call("POST", f"/api/models/{USER}/proto/commit/main", ndjson, {"Authorization": "Bearer wrong"})[0] == 401
    assert call("PUT", "/lfs-upload/" + "0" * 64 + "?sig=forged", b"x")[0] == 403
    assert call("DELETE", "/api/repos/delete", json.dumps({"name": "proto"}).encode())[0] == 200
    assert call("GET", f"/api/models/{USER}/proto")[0] == 404
