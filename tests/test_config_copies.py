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
