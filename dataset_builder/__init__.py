"""Tools for building reinforced (DataCompDR-style) datasets: replayable augmentations, teachers, captioners,
the sharded resumable builder (``build_reinforced_dataset``, also on a Ray cluster: ``RayEngine``), DataCompDR
readers/writers, and ``schema``: the columns, features, metadata (``ReinforcementMetadata``) and rows (``Record``) of a
reinforced dataset, which training reads.

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
from .card import finalize_dataset
from .datacompdr import (
    datacompdr_record,
    datacompdr_to_row,
    load_datacompdr,
    stream_datacompdr_from_hub,
    write_datacompdr,
)
from .ray_engine import RayEngine
from .samples import SKIP_REASONS, PreparedSample, PrepConfig, Skipped, prepare_sample
from .schema import (
    Record,
    ReinforcementMetadata,
    TeacherInfo,
    decode_image,
    records_from_table,
    records_to_table,
    reinforced_features,
)
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
    "PrepConfig",
    "PreparedSample",
    "RayEngine",
    "Record",
    "ReinforcementMetadata",
    "Skipped",
    "Teacher",
    "TeacherEnsemble",
    "TeacherInfo",
    "TransformersCaptioner",
    "TransformersTeacher",
    "apply_augmentation",
    "apply_rand_augment_op",
    "augment_image",
    "build_reinforced_dataset",
    "compress",
    "datacompdr_record",
    "datacompdr_to_row",
    "decode_image",
    "decompress",
    "finalize_dataset",
    "load_captioner",
    "load_datacompdr",
    "load_teacher",
    "magnitude_table",
    "plan_shards",
    "prepare_sample",
    "records_from_table",
    "records_to_table",
    "reinforced_features",
    "replay_for_teacher",
    "sample_augmentations",
    "sample_crop",
    "sample_rand_augment",
    "seed_for_key",
    "stream_datacompdr_from_hub",
    "write_datacompdr",
]
