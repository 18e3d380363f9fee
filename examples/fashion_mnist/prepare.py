"""Writes the Fashion-MNIST subset the demo ships with: `data/train.parquet` and `data/test.parquet`.

Source: Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`; Zalando SE, MIT licence),
70,000 28x28 grey images in 10 classes. The shipped subset is class-balanced: 600 training and 100 test images per
class, PNG-encoded, with columns `image` (datasets `Image`) and `label` (`ClassLabel` with the class names).
`--full` writes all 60,000 / 10,000 instead. Deterministic: the same command writes the same files.

    python examples/fashion_mnist/prepare.py [--root /usr/share/datasets/fashion-mnist] [--full] [--output DIR]
"""

import argparse
import gzip
import os

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
HERE = os.path.dirname(os.path.abspath(__file__))


def load_idx(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads the IDX files of one split ("train" or "t10k"): images (n, 28, 28) uint8 and labels (n,)."""
    with gzip.open(os.path.join(root, f"{split}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(os.path.join(root, f"{split}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(len(labels), 28, 28)
    return images, labels


def balanced_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--output", default=os.path.join(HERE, "data"))
    parser.add_argument("--full", action="store_true", help="write the full 60k/10k splits")
    args = parser.parse_args()
    features = Features({"image": Image(), "label": ClassLabel(names=CLASS_NAMES)})
    os.makedirs(args.output, exist_ok=True)
    for split, source, per_class, seed in (("train", "train", 600, 0), ("test", "t10k", 100, 1)):
        images, labels = load_idx(args.root, source)
        index = np.arange(len(labels)) if args.full else balanced_subset(labels, per_class, seed)
        dataset = Dataset.from_dict({"image": list(images[index]), "label": labels[index].tolist()}, features=features)
        path = os.path.join(args.output, f"{split}.parquet")
        dataset.to_parquet(path)
        print(f"{split}: {len(dataset)} images -> {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
