"""The run plumbing that the two bundles' train.yaml both spell out stays the same in both.

MONAI 1.6.1 has no include: ``--config_file`` lists are given by the caller, and a ``%file#key`` macro opens its
path relative to the working folder, not to the config. ``train.yaml`` must load alone (zero-argument runs, MONAI
Label, the Model Zoo), so these entries are repeated and this test keeps the copies equal.
"""

from pathlib import Path

from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[1] / "bundles"
SHARED = ["ckpt_dir", "output_dir", "dataset_dir", "datalist", "device", "resume_from", "is_not_rank0", "precision",
          "optimizer#params", "optimizer#fused", "optimizer#lr", "initialize", "run", "training"]


def _layered(bundle: str, *names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / bundle / "configs" / name) for name in names])
    return parser


def test_train_configs_share_the_run_plumbing():
    pretrain, finetune = _layered("ideal_pretrain", "train.yaml"), _layered("ideal_finetune", "train.yaml")
    for key in SHARED:
        assert pretrain[key] == finetune[key], key
    checkpoint = {k: v for k, v in pretrain["train#checkpoint"].items() if k != "state"}
    assert checkpoint == {k: v for k, v in finetune["train#checkpoint"].items() if k != "state"}
    assert pretrain["train#checkpoint#state"].items() <= finetune["train#checkpoint#state"].items()
    assert pretrain["train#progress#what"].keys() == finetune["train#progress#what"].keys()


def test_inference_configs_repeat_the_training_settings():
    """``inference.yaml`` must load alone, so it repeats the settings the trained weights depend on (network and
    preprocessing); a drift would run a model on input it was not trained on, silently."""
    repeated = {
        "ideal_finetune": ["backbone", "num_classes", "spatial_size", "pixdim", "fov", "fov_fraction",
                           "pseudo_label_mode", "decoder_inits", "halve_upsampling", "precision"],
        "ideal_pretrain": ["backbone", "feature_level", "embedding_channels", "hidden_channels", "spatial_size",
                           "pixdim", "fov", "fov_fraction", "precision"],
    }
    for bundle, keys in repeated.items():
        for profile in ([], ["cpu.yaml"]):
            train = _layered(bundle, "train.yaml", *profile)
            infer = _layered(bundle, "inference.yaml", *profile)
            for key in keys:
                assert infer[key] == train[key], (bundle, profile, key)


def test_inference_and_evaluation_average_the_same_test_time_views():
    """The Dice that ``evaluate.yaml`` measures is what ``inference.yaml`` gives a user only if both run the same
    test-time views, through the inferer their evaluators use."""
    from custom.inferers import SliceSymmetryInferer

    evaluate = _layered("ideal_finetune", "train.yaml", "evaluate.yaml")
    infer = _layered("ideal_finetune", "inference.yaml")
    assert evaluate["test_time_views"] == infer["test_time_views"]
    assert evaluate["validate#evaluator#inferer"] == "@validate#test_time_inferer"
    assert infer["evaluator#inferer"] == "@inferer"
    for parser, key in ((evaluate, "validate#test_time_inferer"), (infer, "inferer")):
        inferer = parser.get_parsed_content(key)
        assert isinstance(inferer, SliceSymmetryInferer) and inferer.views == parser["test_time_views"], key
