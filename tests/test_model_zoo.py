"""Model Zoo checks of both bundles: metadata schema, network input/output shapes, TorchScript export, weights format.

ResNet-18 for speed (the configs' ``backbone`` override); TorchScript export for both backbones.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.pretraining.network import ContrastivePretrainNet

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
FINETUNE = BUNDLES / "ideal_finetune" / "configs"
PRETRAIN = BUNDLES / "ideal_pretrain" / "configs"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"


def _meta(configs: Path) -> dict:
    return json.loads((configs / "metadata.json").read_text())


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"offline Model Zoo schema not found at {SCHEMA}")
@pytest.mark.filterwarnings("ignore:No hash value provided")
@pytest.mark.parametrize("bundle", ["ideal_finetune", "ideal_pretrain"])
def test_metadata_verifies_against_model_zoo_schema(bundle):
    verify_metadata(meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_finetune_network_in_out_matches_metadata():
    # inference.yaml's network_def: ensemble probabilities, 4 channels at the input resolution (metadata: 128 x 128)
    verify_net_in_out(net_id="network_def", meta_file=str(FINETUNE / "metadata.json"),
                      config_file=str(FINETUNE / "inference.yaml"), device="cpu", backbone="resnet18")


def test_pretrain_network_in_out_matches_metadata():
    # inference.yaml's network_def: unit-length dense embeddings, 128 channels on the stride-32 grid (4 x 4 at 128 px)
    verify_net_in_out(net_id="network_def", meta_file=str(PRETRAIN / "metadata.json"),
                      config_file=str(PRETRAIN / "inference.yaml"), device="cpu", backbone="resnet18")


# MONAI's ResNet-18/34 ("type A" shortcut) concatenate `out.data`: traced, the shortcut became a constant of the trace
# input. custom.networks.encoder.build_encoder replaces it (ZeroPadShortcut), so both backbones must trace exactly.


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the input checks become constants: expected
@pytest.mark.parametrize("backbone", ["resnet18",
                                      pytest.param("resnet50", marks=pytest.mark.slow)])  # ~20 s on 2 busy CPU cores
def test_finetune_ckpt_export_torchscript(tmp_path, backbone):
    # monai.bundle.ckpt_export of inference.yaml's network_def from a random-init models/model.pt in a temporary
    # bundle_root, traced at 1 x 1 x 64 x 64; the exported .ts must equal the eager network on new inputs of that shape,
    # of another batch size and of the metadata's 128 x 128 (scale-factor upsampling, no size baked in)
    torch.manual_seed(0)
    eager = DualDecoderUNet(backbone, output="ensemble")
    (tmp_path / "models").mkdir()
    torch.save(eager.state_dict(), tmp_path / "models" / "model.pt")
    ts_path = tmp_path / "models" / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_path), meta_file=str(FINETUNE / "metadata.json"),
                config_file=str(FINETUNE / "inference.yaml"), bundle_root=str(tmp_path), backbone=backbone,
                use_trace=True, input_shape=[1, 1, 64, 64])
    assert ts_path.is_file()
    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(ts_path), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == _meta(FINETUNE)["version"]
    assert json.loads(extra["inference.json"])["network_def"]["output"] == "ensemble"
    eager.eval()
    for shape in ((1, 1, 64, 64), (2, 1, 64, 64), (1, 1, 128, 128)):  # the trace's shape first, then others
        x = torch.rand(shape)
        with torch.no_grad():
            expected, actual = eager(x), exported(x)
        assert actual.shape == (shape[0], 4, *shape[2:])
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def _config_item(parser: ConfigParser, section: str, target: str) -> str:
    """The id of the item of the list ``section`` whose ``_target_`` is ``target``."""
    for i, item in enumerate(parser[section]):
        if isinstance(item, dict) and item.get("_target_") == target:
            return f"{section}#{i}"
    raise AssertionError(f"no {target} in {section}")


def test_finetune_saver_writes_plain_state_dict(tmp_path):
    # the best-model saver exactly as configured in train.yaml (validate#handlers: MONAI CheckpointSaver,
    # key_metric_filename model.pt), fired by a minimal evaluator-like engine that reports a key metric
    from ignite.engine import Engine, Events

    parser = ConfigParser()
    parser.read_config(str(FINETUNE / "train.yaml"))
    parser.update({"backbone": "resnet18", "bundle_root": str(tmp_path), "device": "$torch.device('cpu')"})
    saver = parser.get_parsed_content(_config_item(parser, "validate#handlers", "CheckpointSaver"))
    network = parser.get_parsed_content("network")
    engine = Engine(lambda engine, batch: None)
    engine.state.key_metric_name = "val_mean_dice"

    @engine.on(Events.EPOCH_COMPLETED)
    def _report(engine):  # registered before the saver's handler, as the evaluator's metrics are
        engine.state.metrics["val_mean_dice"] = 0.5

    saver.attach(engine)
    engine.run([0], max_epochs=1)
    path = tmp_path / "models" / "model.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    fresh = DualDecoderUNet("resnet18")
    fresh.load_state_dict(state)  # strict: exactly the dual-decoder network's entries, no nesting, no prefix
    for k, v in network.state_dict().items():
        torch.testing.assert_close(state[k], v)


def test_pretrain_saver_writes_plain_state_dicts(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(PRETRAIN / "train.yaml"))
    parser.update({"backbone": "resnet18", "bundle_root": str(tmp_path), "device": "$torch.device('cpu')"})
    saver = parser.get_parsed_content(_config_item(parser, "train#handlers", "custom.handlers.PretrainedWeightsSaver"))
    saver.save()
    model = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    encoder = torch.load(tmp_path / "models" / "encoder.pt", map_location="cpu", weights_only=True)
    ContrastivePretrainNet("resnet18").load_state_dict(model)
    assert set(encoder) == {k for k in model if k.startswith("encoder.")}


ZOO_CI = Path(__file__).resolve().parent / "model_zoo_ci"


@pytest.mark.slow
@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"offline Model Zoo schema not found at {SCHEMA}")
@pytest.mark.parametrize("bundle,backbone", [(b, k) for b in ("ideal_finetune", "ideal_pretrain")
                                             for k in ("resnet18", "resnet34", "resnet50")])
def test_model_zoo_full_verification(tmp_path, bundle, backbone):
    """The Zoo's own `ci/verify_bundle.py -m full` (vendored unchanged, see model_zoo_ci/README.md) on the bundle as
    `custom.export` writes it: files, version and changelog, metadata schema, inference properties, network
    input/output shapes against metadata.json, and TorchScript export of models/model.pt."""
    import subprocess
    import sys

    from custom.export import export_bundle

    models = tmp_path / "models"
    net = (DualDecoderUNet(backbone) if bundle == "ideal_finetune" else ContrastivePretrainNet(backbone))
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    export_bundle(BUNDLES / bundle, models / bundle, weights=tmp_path / "weights.pt", settings=[f"backbone={backbone}"])
    (models / "model_info.json").write_text("{}")  # the Zoo's registry of released versions: none of ours
    (models / bundle / "eval").mkdir()
    (models / bundle / "eval" / "schema.json").write_bytes(SCHEMA.read_bytes())  # offline: the schema it would fetch
    proc = subprocess.run([sys.executable, str(ZOO_CI / "verify_bundle.py"), "-b", bundle, "-p", str(models), "-m", "full"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "export weights into TorchScript module successfully" in proc.stdout
    assert (models / bundle / "models" / "verify_model.ts").is_file()

