"""Shared by the throughput benchmarks: synthetic inputs (DataComp-sized JPEGs, a teacher that costs nothing) and
the result files (`harness.write_results`).

Model throughput depends on sizes and shapes, not on weight values, so random weights and a projection "teacher"
measure the same work as the real thing (the teachers' own cost is measured separately). JPEG decoding does depend on
the pixels: uniform random pixels compress about 3x worse than a photo and take about twice as long to decode, so the
synthetic images are photo-like (`natural_pixels`).
"""

import io
import zlib

import datasets
import torch
import torch.nn.functional as F
from PIL import Image

# device_name and write_results are part of this module's API: the throughput benchmarks import them from here.
from benchmarks.harness import device_name, write_results  # noqa: F401
from dataset_builder import Teacher, build_reinforced_dataset
from modeling_mobileclip.testing_utils import natural_pixels


def synthetic_dataset(n: int, height: int = 300, width: int = 400, seed: int = 0) -> datasets.Dataset:
    """`n` photo-like JPEGs (`natural_pixels`, quality 90; 400x300 is about DataComp's median image) with captions,
    keys `img-00000`..."""
    images = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(natural_pixels(seed * n + i, height, width)).save(buf, format="JPEG", quality=90)
        images.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"key": datasets.Value("string"), "image": datasets.Image(),
                                  "caption": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"key": [f"img-{i:05d}" for i in range(n)], "image": images,
         "caption": [f"a photo of object number {i} on a table" for i in range(n)]},
        features=features)


class ProjectionTeacher(Teacher):
    """A fixed random projection of 4x4-pooled pixels and of hashed captions: DataCompDR-shaped embeddings (any
    width) at no model cost, to write realistic reinforced datasets quickly."""

    def __init__(self, dim: int = 768, image_size: int = 224, seed: int = 0):
        super().__init__(f"projection-{dim}-{seed}", dim, 100.0, image_size)
        self.model = torch.nn.Linear(48, dim)
        torch.nn.init.normal_(self.model.weight, generator=torch.Generator().manual_seed(seed))

    def _encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(F.adaptive_avg_pool2d(pixel_values, 4).flatten(1))

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        seeds = [zlib.crc32(t.encode()) for t in texts]
        return self.model(torch.stack([torch.randn(48, generator=torch.Generator().manual_seed(s)) for s in seeds]))


def reinforced_dataset(output_dir: str, num_images: int, k: int, n: int, dims: tuple[int, ...] = (768, 768),
                       num_workers: int = 0) -> dict:
    """A reinforced dataset of `num_images` synthetic JPEGs in DataCompDR's shape (K augmentations, N synthetic
    captions, one teacher slice per entry of `dims`), written by dataset_builder; returns its report."""
    data = synthetic_dataset(num_images)
    syn = [[f"{c}, variant {j}" for j in range(n)] for c in data["caption"]]
    return build_reinforced_dataset(
        data.add_column("syn_captions", syn), output_dir, [ProjectionTeacher(d, seed=i) for i, d in enumerate(dims)],
        key_column="key", syn_captions_column="syn_captions", num_augmentations=k, num_synthetic_captions=n,
        num_workers=num_workers, progress=False)
