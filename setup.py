from setuptools import find_packages, setup

setup(
    name="mobileclip-hf",
    version="0.1.0",
    description="MobileCLIP and MobileCLIP2 for the Hugging Face ecosystem: models, conversion, export, "
    "dataset reinforcement and reinforced training",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_mobileclip", "dataset_builder", "train"]),
    package_data={
        "modeling_mobileclip": ["bpe_simple_vocab_16e6.txt.gz"],
        "train": ["configs/*.yaml", "metrics/*/*.py"],
    },
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "transformers>=5.23,<6",
        "timm>=1.0.20",
        "safetensors",
        "huggingface_hub",
        "datasets>=4.0",
        "accelerate>=1.0",
        "evaluate",
        "ftfy",
        "pillow",
        "numpy",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        # Reference implementations and tooling for tests and benchmarks. Apple's reference code is installed
        # separately with `pip install --no-deps visaionmobileclip` (it pins an old timm).
        "dev": ["pytest", "open_clip_torch==3.3.0", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf",
                "tensorboard", "matplotlib", "parameterized", "ruff", "ray>=2.9"],
        # ONNX and OpenVINO export, their int8 forms (onnxruntime's quantization, NNCF).
        "export": ["onnx", "onnxruntime", "onnxscript", "openvino", "nncf"],
        # The dataset builder's Ray engine (python -m dataset_builder --engine ray).
        "ray": ["ray>=2.9"],
    },
)
