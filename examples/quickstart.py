"""Quickstart: the whole inference API of this package, offline, in about a minute on a CPU.

It builds MobileCLIP-S0 (MCi0 image tower, MCt text tower) from the variant table with RANDOM weights (no pretrained
weights can be downloaded here; convert a released checkpoint with `python -m modeling_mobileclip.convert` for real
ones), saves it with its processor as a Hub repo would hold it, reloads it through the Auto classes, fuses it for
inference, checks that fusion is exact, and runs the zero-shot pipeline. Scores are not meaningful with random
weights; the shapes, the API and the timings are.

    python examples/quickstart.py [--variant mobileclip-s0] [--output quickstart-model]
"""

import argparse
import time

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel, MobileCLIPProcessor


def timed(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mobileclip-s0")
    parser.add_argument("--output", default="quickstart-model")
    args = parser.parse_args()
    torch.manual_seed(0)

    model = MobileCLIPModel(MobileCLIPConfig.from_variant(args.variant)).eval()
    MobileCLIPProcessor.from_variant(args.variant).save_pretrained(args.output)
    model.save_pretrained(args.output)
    print(f"saved {args.variant} (random weights) to {args.output}/")

    model = AutoModel.from_pretrained(args.output).eval()
    processor = AutoProcessor.from_pretrained(args.output)
    size = model.config.vision_config.image_size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size + 40, size, 3), dtype=np.uint8))
    labels = ["a cat", "a dog", "a rocket"]
    inputs = processor(images=image, text=[f"a photo of {label}" for label in labels], return_tensors="pt")

    with torch.inference_mode():
        train_time = model(**inputs).logits_per_image
        train_ms = timed(lambda: model(**inputs))
        model.reparameterize()
        fused = model(**inputs).logits_per_image
        fused_ms = timed(lambda: model(**inputs))
    print(
        f"re-parameterisation: max abs logit diff {(fused - train_time).abs().max().item():.2e}, "
        f"1 image + {len(labels)} texts: {train_ms:.0f} ms train-time form, {fused_ms:.0f} ms fused"
    )

    classifier = pipeline("zero-shot-image-classification", model=args.output)
    for result in classifier(image, candidate_labels=labels):
        print(f"  {result['label']:>10}: {result['score']:.3f}  (random weights: not meaningful)")


if __name__ == "__main__":
    main()
