"""Tools for building reinforced (DataCompDR-style) datasets: replayable augmentations, teachers, captioners,
the sharded resumable builder (``build_reinforced_dataset``) and DataCompDR readers/writers.

CLI: ``python -m dataset_builder --help``.
"""

from .augment import (
    DEFAULT_INTERPOLATION,
    DEFAULT_OUTPUT_SIZE,
    MAGNITUDE,
    NUM_MAGNITUDE_BINS,
    NUM_OPS,
    OP_NAMES,
    RAND_AUGMENT_INTERPOLATION,
    RRC_RATIO,
    RRC_SCALE,
    AugmentationParams,
    apply_augmentation,
    apply_rand_augment_op,
    augment_image,
    compress,
    decompress,
    magnitude_table,
    sample_augmentations,
    sample_crop,
    sample_rand_augment,
    seed_for_key,
)
from .builder import build_reinforced_dataset, plan_shards
from .captioner import CoCaCaptioner, TransformersCaptioner, load_captioner
from .card import finalize_dataset, reinforced_features
from .datacompdr import datacompdr_to_row, load_datacompdr, stream_datacompdr_from_hub, write_datacompdr
from .samples import SKIP_REASONS
from .teachers import OpenCLIPTeacher, Teacher, TeacherEnsemble, TransformersTeacher, load_teacher, replay_for_teacher

__all__ = [
    "DEFAULT_INTERPOLATION",
    "DEFAULT_OUTPUT_SIZE",
    "MAGNITUDE",
    "NUM_MAGNITUDE_BINS",
    "NUM_OPS",
    "OP_NAMES",
    "RAND_AUGMENT_INTERPOLATION",
    "RRC_RATIO",
    "RRC_SCALE",
    "SKIP_REASONS",
    "AugmentationParams",
    "CoCaCaptioner",
    "OpenCLIPTeacher",
    "Teacher",
    "TeacherEnsemble",
    "TransformersCaptioner",
    "TransformersTeacher",
    "apply_augmentation",
    "apply_rand_augment_op",
    "augment_image",
    "build_reinforced_dataset",
    "compress",
    "datacompdr_to_row",
    "decompress",
    "finalize_dataset",
    "load_captioner",
    "load_datacompdr",
    "load_teacher",
    "magnitude_table",
    "plan_shards",
    "reinforced_features",
    "replay_for_teacher",
    "sample_augmentations",
    "sample_crop",
    "sample_rand_augment",
    "seed_for_key",
    "stream_datacompdr_from_hub",
    "write_datacompdr",
]
