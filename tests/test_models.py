"""Every registered model: shapes, gradients, over-fitting, weights round trip, registry.

Parametrised over ``list_models()`` so a newly registered architecture is
covered automatically; FAST_OVERRIDES shrinks known models so the file runs in
well under a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smallcovid.core.errors import SmallCovidError, UnknownModelError
from smallcovid.models import (
    build_model,
    get_spec,
    list_models,
    make_config,
    num_parameters,
    pad_to_multiple,
    register_model,
)
from smallcovid.models.checkpoint import load_weights, save_weights
from smallcovid.models.registry import BUILTIN

REPO = Path(__file__).resolve().parent.parent

torch.set_num_threads(2)

# Smaller configs for the slow tests only; unknown (new) models run with defaults.
FAST_OVERRIDES: dict[str, dict] = {
    "smallcovid-net": {"filters": 16},
    "unet": {"decoder_channels": (64, 32, 16, 16, 8)},
    "segnet": {"width": 0.125},
    "mask-rcnn": {
        "image_size": 64,
        "fpn_channels": 64,
        "representation_size": 128,
        "mask_head_channels": 64,
    },
}

MODELS = list_models()


def fast_model(name: str):
    torch.manual_seed(0)
    return build_model(name, **FAST_OVERRIDES.get(name, {}))


def blob_batch(size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two images with one bright disc lesion each: GGO in the first, consolidation in the second.

    Returns images (2, 1, S, S), lesion_mask (2, 1, S, S), lesion_types (2, S, S).
    """
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    discs = [((yy - 20) ** 2 + (xx - 24) ** 2) < 100, ((yy - 40) ** 2 + (xx - 36) ** 2) < 144]
    mask = torch.stack(discs).unsqueeze(1).float()
    gen = torch.Generator().manual_seed(1)
    images = (0.2 + 0.6 * mask + 0.05 * torch.randn(mask.shape, generator=gen)).clamp(0, 1)
    types = torch.stack([discs[0].long() * 1, discs[1].long() * 2])
    return images, mask, types


@pytest.mark.parametrize("name", MODELS)
def test_predict_shapes_on_odd_sizes(name):
    model = fast_model(name).eval()
    images = torch.rand(2, 1, 45, 61)
    padded, crop = pad_to_multiple(images, model.size_multiple())
    assert all(side % model.size_multiple() == 0 for side in padded.shape[-2:])
    try:
        lesion_logits, type_logits = model(padded)
    except NotImplementedError:  # instance models have no dense logits
        pass
    else:
        assert lesion_logits.shape == (2, 1, *padded.shape[-2:])
        assert type_logits.shape == (2, 3, *padded.shape[-2:])
    pred = model.predict(padded)
    lesion, types = pred.lesion_prob[..., crop[0], crop[1]], pred.type_prob[..., crop[0], crop[1]]
    assert lesion.shape == (2, 1, 45, 61) and types.shape == (2, 3, 45, 61)
    assert lesion.dtype == torch.float32 and types.dtype == torch.float32
    assert lesion.min() >= 0 and lesion.max() <= 1
    assert types.min() >= 0 and types.max() <= 1
    torch.testing.assert_close(types.sum(dim=1), torch.ones(2, 45, 61))


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_finite_with_finite_gradients(name):
    model = fast_model(name).train()
    images, mask, types = blob_batch()
    # The second image has no lesion: models must cope with empty targets.
    mask[1], types[1] = 0, 0
    loss = model.loss(images, mask, types)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.training  # loss/predict restore the caller's mode
    model.predict(images)
    assert model.training


@pytest.mark.parametrize("name", MODELS)
def test_loss_decreases_when_overfitting_two_images(name):
    model = fast_model(name).train()
    images, mask, types = blob_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = model.loss(images, mask, types)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", MODELS)
def test_weights_round_trip(name, tmp_path):
    model = fast_model(name).eval()
    images = torch.rand(1, 1, 64, 64)
    card = save_weights(model, tmp_path / f"{name}.safetensors", card={"note": "test", "threshold": 0.8})
    assert card["architecture"] == name and card["note"] == "test"
    assert card["params"] == num_parameters(model) and len(card["sha256"]) == 64
    assert json.loads((tmp_path / f"{name}.json").read_text()) == card
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]  # no temp files left behind

    for target in (tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json", tmp_path):
        loaded, loaded_card = load_weights(target)
        assert not loaded.training and loaded_card == card
    before, after = model.predict(images), loaded.predict(images)
    assert torch.equal(before.lesion_prob, after.lesion_prob)
    assert torch.equal(before.type_prob, after.type_prob)


def test_load_weights_reports_bad_files(tmp_path):
    model = fast_model("smallcovid-net")
    path = tmp_path / "net.safetensors"
    save_weights(model, path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SmallCovidError, match="net.safetensors.*sha256"):
        load_weights(path)
    with pytest.raises(SmallCovidError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "net.json").write_text("{not json")
    with pytest.raises(SmallCovidError, match="net.json"):
        load_weights(tmp_path / "net.json")
    with pytest.raises(SmallCovidError, match="must end in"):
        save_weights(model, tmp_path / "net.pt")


def test_half_precision_weights_load_into_fp32_model(tmp_path):
    model = fast_model("smallcovid-net").eval()
    card = save_weights(model, tmp_path / "net.safetensors", dtype=torch.float16)
    loaded, _ = load_weights(tmp_path / "net.safetensors")
    assert card["weights_dtype"] == "float16"
    assert next(loaded.parameters()).dtype == torch.float32
    images = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(
        loaded.predict(images).lesion_prob, model.predict(images).lesion_prob, atol=1e-2, rtol=0
    )


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        build_model("no-such-model")
    for name in MODELS:
        assert name in str(info.value)


def test_duplicate_registration_is_refused():
    spec = get_spec(MODELS[0])
    with pytest.raises(ValueError, match="already registered"):
        register_model(MODELS[0], spec.config_cls, "duplicate")(spec.builder)
    assert get_spec(MODELS[0]) is spec


def test_builtin_table_names_each_module_config_builder_and_description():
    assert [row.name for row in BUILTIN] == list_models()[: len(BUILTIN)]
    assert [row.name for row in BUILTIN] == ["smallcovid-net", "unet", "segnet", "mask-rcnn"]
    for row in BUILTIN:
        module = importlib.import_module(row.module)
        spec = get_spec(row.name)
        assert spec.config_cls is getattr(module, row.config) and spec.builder is module.build, row
        assert dataclasses.is_dataclass(spec.config_cls), row
        assert spec.description == module.DESCRIPTION, row  # the table repeats the module's text
        assert get_spec(row.name) is spec  # resolved once


def _fresh(code: str) -> None:
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


def test_listing_models_imports_no_model_and_a_model_imports_only_its_own():
    _fresh("import sys\n"
           "from smallcovid.models import list_models\n"
           "assert list_models()[:4] == ['smallcovid-net', 'unet', 'segnet', 'mask-rcnn'], list_models()\n"
           "heavy = ('torch', 'torchvision', 'segmentation_models_pytorch')\n"
           "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
           "from smallcovid.models import build_model\n"
           "build_model('smallcovid-net')\n"
           "others = ('torchvision', 'segmentation_models_pytorch', 'smallcovid.models.mask_rcnn',\n"
           "          'smallcovid.models.unet', 'smallcovid.models.segnet')\n"
           "assert not [m for m in others if m in sys.modules], [m for m in others if m in sys.modules]\n")


def test_duplicate_of_a_builtin_not_yet_used_is_refused_without_importing_it():
    _fresh("import sys\n"
           "from smallcovid.models import register_model\n"
           "try:\n"
           "    register_model('mask-rcnn', object, 'x')(lambda *, config: None)\n"
           "except ValueError as exc:\n"
           "    assert 'already registered' in str(exc)\n"
           "else:\n"
           "    raise AssertionError('a duplicate name was registered')\n"
           "assert 'torchvision' not in sys.modules and 'smallcovid.models.mask_rcnn' not in sys.modules\n")


@pytest.mark.parametrize("name", MODELS)
def test_config_json_round_trip(name):
    config = make_config(name, **FAST_OVERRIDES.get(name, {}))
    restored = make_config(name, **json.loads(json.dumps(dataclasses.asdict(config))))
    assert restored == config
    assert build_model(name, config=dataclasses.asdict(config)).config == config


def test_default_parameter_counts():
    counts = {name: num_parameters(build_model(name)) for name in MODELS}
    print("default parameter counts:", counts)
    assert counts["smallcovid-net"] <= counts["unet"] / 20


def test_smallcovid_net_decoder_convs():
    paper = build_model("smallcovid-net", decoder_convs=None)  # None: as many as convs_per_block
    slim = build_model("smallcovid-net")
    per_conv = 24 * 24 * 9 + 2 * 24  # one extra 24->24 conv + its BatchNorm, per decoder block
    assert num_parameters(paper) - num_parameters(slim) == 4 * per_conv
    with pytest.raises(SmallCovidError, match="decoder_convs"):
        build_model("smallcovid-net", decoder_convs=0)


def test_smallcovid_net_deep_supervision(tmp_path):
    """Auxiliary heads: trained (the loss changes and reaches them), ignored at inference,
    saved and loaded with the weights; 0 builds the same network as before."""
    torch.manual_seed(0)
    plain = build_model("smallcovid-net", filters=8)
    torch.manual_seed(0)
    deep = build_model("smallcovid-net", filters=8, deep_supervision=2)
    assert num_parameters(deep) - num_parameters(plain) == 2 * (8 + 1)
    missing = deep.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["aux_heads.0.bias", "aux_heads.0.weight", "aux_heads.1.bias", "aux_heads.1.weight"]
    images, mask = torch.rand(2, 1, 67, 61), (torch.rand(2, 1, 67, 61) > 0.7).float()
    types = (mask[:, 0] * 2).long()
    padded, crop = pad_to_multiple(images, deep.size_multiple())
    m = torch.nn.functional.pad(mask, (0, padded.shape[-1] - 61, 0, padded.shape[-2] - 67))
    t = torch.nn.functional.pad(types, (0, padded.shape[-1] - 61, 0, padded.shape[-2] - 67))
    deep.train(), plain.train()
    loss_deep, loss_plain = deep.loss(padded, m, t), plain.loss(padded, m, t)
    assert torch.isfinite(loss_deep) and loss_deep > loss_plain  # the auxiliary terms are added
    loss_deep.backward()
    assert deep.aux_heads[1].weight.grad is not None and deep.aux_heads[1].weight.grad.abs().sum() > 0
    deep.eval(), plain.eval()
    assert torch.equal(deep.predict(padded).lesion_prob, plain.predict(padded).lesion_prob)
    save_weights(deep, tmp_path / "deep.safetensors")
    loaded, card = load_weights(tmp_path / "deep.safetensors")
    assert card["config"]["deep_supervision"] == 2
    assert torch.equal(loaded.predict(padded).lesion_prob, deep.predict(padded).lesion_prob)
    with pytest.raises(SmallCovidError, match="deep_supervision"):
        build_model("smallcovid-net", deep_supervision=4)


def test_smallcovid_net_type_dice_adds_a_soft_dice_of_the_two_lesion_types():
    """type_dice adds weight x (1 - mean soft Dice of ground-glass and consolidation) to the loss,
    reaches the type head, ignores pixels of unknown type, and 0 is the loss as before."""
    from segmentation_models_pytorch.losses import DiceLoss

    torch.manual_seed(0)
    plain = build_model("smallcovid-net", filters=8)
    torch.manual_seed(0)
    weighted = build_model("smallcovid-net", filters=8, type_dice=0.5)
    assert num_parameters(weighted) == num_parameters(plain)
    images, mask = torch.rand(2, 1, 64, 64), (torch.rand(2, 1, 64, 64) > 0.7).float()
    types = (mask[:, 0] * torch.randint(1, 3, (2, 64, 64))).long()
    types[0, :5] = -100  # unknown type
    plain.train(), weighted.train()
    torch.manual_seed(1)
    base = plain.loss(images, mask, types)
    torch.manual_seed(1)
    total = weighted.loss(images, mask, types)
    _, type_logits = weighted.logits(images)
    ref = DiceLoss(mode="multiclass", classes=[1, 2], from_logits=True, ignore_index=-100)(type_logits, types)
    assert (total - base).item() == pytest.approx(0.5 * ref.item(), rel=1e-4) and ref.item() > 0
    total.backward()
    assert weighted.type_head.weight.grad.abs().sum() > 0
    assert build_model("smallcovid-net", type_dice=0).config.type_dice == 0
    for bad in (-1, 11, "1", True):
        with pytest.raises(SmallCovidError, match="type_dice"):
            build_model("smallcovid-net", type_dice=bad)


def test_pad_to_multiple():
    x = torch.ones(1, 1, 45, 64)
    padded, crop = pad_to_multiple(x, 32)
    assert padded.shape == (1, 1, 64, 64) and padded[..., 45:, :].abs().sum() == 0
    assert torch.equal(padded[..., crop[0], crop[1]], x)
    same, _ = pad_to_multiple(padded, 32)
    assert same is padded


def test_mask_rcnn_instances_from_lesion_mask():
    import numpy as np

    from smallcovid.models.instances import lesion_instances

    mask = np.zeros((10, 12), dtype=np.uint8)
    types = np.zeros((10, 12), dtype=np.int64)
    mask[1:3, 1:3] = 1  # 2x2 block ...
    mask[3, 3] = 1  # ... joined diagonally (8-connectivity): one 5-pixel GGO region
    types[1:3, 1:3] = 1
    mask[6:9, 6:11] = 1  # 15-pixel region, 8 px consolidation -> label 2
    types[6:9, 6:11] = 1
    types[6:8, 6:10] = 2
    mask[0, 11] = 1  # single pixel, below min_pixels
    boxes, masks, labels = lesion_instances(mask, types, min_pixels=4)
    assert boxes.tolist() == [[1, 1, 4, 4], [6, 6, 11, 9]]
    assert masks.shape == (2, 10, 12) and masks.dtype == np.uint8 and masks.sum() == 5 + 15
    assert labels.tolist() == [1, 2]
    empty = lesion_instances(np.zeros((5, 5)), np.zeros((5, 5)), min_pixels=4)
    assert [a.shape for a in empty] == [(0, 4), (0, 5, 5), (0,)]


def test_mask_rcnn_eval_mode_loss_leaves_batchnorm_stats_alone():
    model = fast_model("mask-rcnn").eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.loss(*blob_batch())
    after = model.state_dict()
    assert not model.training
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_mask_rcnn_merges_detections_into_probability_maps():
    """Per-type max of score x mask; lesion = min(1, GGO + consolidation); shares by evidence."""
    model = fast_model("mask-rcnn")
    square = torch.zeros(1, 8, 8)
    square[0, 2:5, 2:5] = 1.0
    other = torch.zeros(1, 8, 8)
    other[0, 6:8, 6:8] = 0.5
    detections = {
        "scores": torch.tensor([0.3, 0.3, 0.8, 0.01]),  # the last is under score_threshold
        "labels": torch.tensor([1, 2, 1, 2]),
        "masks": torch.stack([square, square, other, torch.ones(1, 8, 8)]),
    }

    class FixedDetector(torch.nn.Module):
        def forward(self, images):
            return [detections for _ in images]

    model.net = FixedDetector()
    pred = model.predict(torch.zeros(1, 1, 8, 8))
    lesion, types = pred.lesion_prob[0, 0], pred.type_prob[0]
    assert torch.allclose(lesion[3, 3], torch.tensor(0.6))  # 0.3 GGO + 0.3 consolidation
    assert torch.allclose(lesion[7, 7], torch.tensor(0.4))  # 0.8 x mask 0.5
    assert lesion[0, 0] == 0  # only the dropped low-score detection covers it
    assert torch.allclose(types[1:, 3, 3], torch.tensor([0.3, 0.3]))
    assert torch.allclose(types[:, 7, 7], torch.tensor([0.6, 0.4, 0.0]))
    torch.testing.assert_close(types.sum(dim=0), torch.ones(8, 8))


@pytest.mark.parametrize("name", MODELS)
def test_inference_optimisation_keeps_outputs(name):
    """BN folding + channels-last change outputs only by float rounding, and remove every BN."""
    import copy

    from smallcovid.models.fuse import optimize_for_inference

    model = fast_model(name).train()
    images, mask, types = blob_batch()
    with torch.no_grad():  # a few forward passes give BN non-trivial running statistics
        for _ in range(3):
            model.loss(images, mask, types)
    model.eval()
    fused = optimize_for_inference(copy.deepcopy(model), torch.device("cpu"))
    remaining = [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not remaining, f"{len(remaining)} BatchNorm2d left unfused"
    x = torch.rand(1, 1, 64, 64)
    if name == "mask-rcnn":  # detections are discrete: compare the features they come from
        before, after = model.net.backbone(x), fused.net.backbone(x)
        for key in before:
            torch.testing.assert_close(after[key], before[key], atol=1e-4, rtol=1e-4)
        return
    before, after = model.predict(x), fused.predict(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(after.lesion_prob, before.lesion_prob, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after.type_prob, before.type_prob, atol=1e-5, rtol=1e-4)


def test_no_pickle_based_loading_anywhere():
    """Weights come only from safetensors: no pickle-based loader (torch, pickle, dill, joblib) in the code we ship or run."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    files = [repo / "app.py", repo / "train.py"] + [
        f for d in ("smallcovid", "pages", "scripts", "benchmarks") for f in (repo / d).rglob("*.py")]
    # The pattern is assembled from parts so that this file does not itself read as such a call.
    loaders = "|".join(("torch", "pickle", "dill", "joblib"))
    load = r"\.load"
    pattern = re.compile(rf"\b({loaders}){load}\s*\(|\btorch\.jit{load}|import pickle")
    hits = [f"{f.relative_to(repo)}:{n}" for f in files
            for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert len(files) > 20 and not hits, hits


def test_mask_rcnn_merge_mask_keeps_the_mask_probability():
    """merge="mask": the lesion probability is the mask head's, not score x mask (same weights)."""
    torch.manual_seed(0)
    model = fast_model("mask-rcnn").eval()
    images = torch.rand(1, 1, 64, 64)
    plain = model.predict(images).lesion_prob
    model.config = dataclasses.replace(model.config, merge="mask", merge_min_score=0.0)
    masked = model.predict(images).lesion_prob
    assert masked.shape == plain.shape and bool((masked >= plain - 1e-6).all())  # scores <= 1 only shrink
    with pytest.raises(SmallCovidError, match="merge"):
        build_model("mask-rcnn", merge="max")


def test_a_models_inference_batch_bounds_memory_not_the_answer():
    """Mask R-CNN runs ``infer_batch`` images per pass at inference: a batch of 5 gives what
    one image at a time gives, and each pass sees at most that many images."""
    import numpy as np

    from smallcovid.inference.predictor import Predictor
    from tinydata import TINY_IMAGE_SIZE, TINY_MODEL_CONFIG

    torch.manual_seed(0)
    model = build_model("mask-rcnn", **TINY_MODEL_CONFIG["mask-rcnn"]).eval()
    assert model.infer_batch == 2
    seen = []
    predict = model.predict
    model.predict = lambda x, **kw: (seen.append(len(x)), predict(x, **kw))[1]
    pred = Predictor(model, image_size=TINY_IMAGE_SIZE["mask-rcnn"], threshold=0.5)
    rng = np.random.default_rng(0)
    images = [rng.random((40, 52)).astype(np.float32) for _ in range(5)]
    together = pred.predict_images(images, batch_size=8)
    assert seen == [2, 2, 1]
    alone = [pred.predict_images([im])[0] for im in images]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.lesion, b.lesion, atol=1e-5)
        np.testing.assert_allclose(a.types, b.types, atol=1e-5)
