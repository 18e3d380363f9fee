"""Stand-in for transformers' `tests/utils/test_configuration_utils.py`, which its sdist does not ship.

`ConfigTester.check_config_can_be_init_without_params` passes these to a config and reads each back: non-default
values of every common `PreTrainedConfig` attribute (transformers 5: `transformers_version` ... `problem_type`).
"""

config_common_kwargs = {
    "architectures": ["BertModel"],
    "output_hidden_states": True,
    "return_dict": False,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "is_encoder_decoder": True,
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
