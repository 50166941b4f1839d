"""The reference classifier of label fidelity: its checkpoint, its loader and label fidelity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from diffusion_lab.config.source import compose_config
from diffusion_lab.data.cifar10 import load_cifar10
from diffusion_lab.data.generated import write_generated_set
from diffusion_lab.data.tensors import to_signed_unit
from diffusion_lab.jobs.classify import classify
from diffusion_lab.jobs.evaluate import evaluate
from diffusion_lab.quality.fidelity import label_fidelity
from diffusion_lab.runs.checkpoints import RUN_CONFIG_KEY
from diffusion_lab.runs.reference import ReferenceClassifier, load_reference_classifier
from diffusion_lab.scoring.reference import load_reference
from diffusion_lab.utils.errors import UserFacingError
from tests.conftest import REPO_ROOT
from tests.feature_standin import save_stand_in
from tests.test_evaluate import DIGITS8, STAND_IN

# The reference recipe shrunk to seconds: a two-stage CNN of width 8/16 on digits at 8x8, kept
# in bf16 autocast so that the ceiling is reproduced under the precision it was tested with.
TINY_REFERENCE_OVERRIDES = [
    "experiment=reference_classifier",
    "data=digits",
    "img_size=8",
    "model.widths=[8,16]",
    "model.convs_per_stage=1",
    "batch_size=64",
    "epochs=4",
    "lr=1e-2",
    "crop_padding=0",
    "trainer=cpu",
    "trainer.log_every_n_steps=5",
    "callbacks.progress.refresh_rate=0",
]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> tuple[Path, dict, object]:
    """A finished tiny reference run: (its folder, its metrics, its composed config)."""
    run = tmp_path_factory.mktemp("reference")
    cfg = compose_config("classify", [*TINY_REFERENCE_OVERRIDES, f"output_dir={run}"])
    return run, classify(cfg), cfg


@pytest.fixture(scope="session")
def digits_test_set(reference_run) -> tuple[Tensor, Tensor]:
    """The real test images (uint8, as the run saw them) and labels."""
    data = instantiate(reference_run[2].data)
    data.prepare_data()
    data.setup("test")
    return data.test_set.images, data.test_set.labels


@pytest.mark.slow
def test_reference_run_writes_its_checkpoint_beside_metrics(reference_run):
    run, metrics, _ = reference_run
    reference = load_reference_classifier(run / "reference.ckpt")
    assert isinstance(reference, ReferenceClassifier)
    assert (reference.channels, reference.img_size) == (1, 8)
    assert reference.class_names == tuple(str(c) for c in range(10))
    assert reference.test_accuracy == pytest.approx(metrics["test/acc"])
    assert reference.autocast_dtype == torch.bfloat16
    assert not reference.net.training
    assert not any(p.requires_grad for p in reference.net.parameters())
    assert reference.net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_label_fidelity_on_real_test_images_equals_recorded_test_accuracy(
    reference_run, digits_test_set
):
    run, metrics, _ = reference_run
    reference = load_reference_classifier(run / "reference.ckpt")
    images, labels = digits_test_set
    overall, per_class = label_fidelity(
        reference.net, images, labels, 10, batch_size=500, autocast_dtype=reference.autocast_dtype
    )
    assert metrics["test/acc"] > 0.5  # a classifier that has learnt something, not chance
    assert overall == pytest.approx(metrics["test/acc"], abs=1e-6)
    recorded = [metrics["test/per_class_acc"][name] for name in reference.class_names]
    assert per_class.tolist() == pytest.approx(recorded, abs=1e-6)
    # Batching changes nothing, and uint8 pixels are read as their [-1, 1] floats.
    small_batches = label_fidelity(
        reference.net, to_signed_unit(images), labels, 10, 7, reference.autocast_dtype
    )
    assert small_batches[0] == pytest.approx(overall, abs=2 / len(labels))


class FirstPixelClass(nn.Module):
    """Predicts the class written in each image's first pixel (a hand-built classifier)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.unused = nn.Parameter(torch.zeros(1))  # tells label_fidelity the device

    def forward(self, x: Tensor) -> Tensor:
        return F.one_hot(x[:, 0, 0, 0].round().long(), self.num_classes).float()


def images_predicted_as(predictions: list[int]) -> Tensor:
    """Float images whose first pixel holds the class FirstPixelClass will predict."""
    images = torch.zeros(len(predictions), 1, 2, 2)
    images[:, 0, 0, 0] = torch.tensor(predictions, dtype=torch.float32)
    return images


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_label_fidelity_per_class_on_a_hand_built_case(batch_size):
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    images = images_predicted_as([0, 0, 1, 2, 1, 1, 0])
    overall, per_class = label_fidelity(FirstPixelClass(4), images, labels, 4, batch_size)
    assert overall == pytest.approx(4 / 7)
    assert per_class[:3].tolist() == [0.5, 1.0, 0.0]
    assert per_class[3].isnan()  # no images of class 3


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.tensor([0, 1]), r"labels must be \(3,\)"),
        (torch.tensor([0, 1, 4]), r"labels must lie in \[0, 4\)"),
        (torch.tensor([0, -1, 2]), r"labels must lie in \[0, 4\)"),
    ],
)
def test_label_fidelity_refuses_labels_that_do_not_fit(labels, match):
    with pytest.raises(ValueError, match=match):
        label_fidelity(FirstPixelClass(4), images_predicted_as([0, 1, 2]), labels, 4)


def test_label_fidelity_refuses_an_empty_set_and_a_bad_batch_size():
    with pytest.raises(ValueError, match="at least one image"):
        label_fidelity(FirstPixelClass(4), torch.zeros(0, 1, 2, 2), torch.zeros(0), 4)
    with pytest.raises(ValueError, match="batch_size=0"):
        label_fidelity(FirstPixelClass(4), images_predicted_as([1]), torch.tensor([1]), 4, 0)


def test_loader_refuses_a_missing_file(tmp_path):
    with pytest.raises(UserFacingError, match=r"^reference=.*nope\.ckpt: no such classifier"):
        load_reference_classifier(tmp_path / "nope.ckpt")


def test_loader_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    with pytest.raises(UserFacingError, match=r"notes\.ckpt: not a PyTorch checkpoint file$"):
        load_reference_classifier(path, key="label_fidelity.reference")


@pytest.mark.parametrize(
    ("checkpoint", "what"),
    [
        ({"state_dict": {}}, "no stored run config"),
        (
            {RUN_CONFIG_KEY: {"module": {"_target_": "diffusion_lab.lit.ddpm.DDPMModule"}}},
            r"its module is diffusion_lab\.lit\.ddpm\.DDPMModule",
        ),
        ({RUN_CONFIG_KEY: {"module": {"_target_": "no.such.Module"}}}, "its module is no"),
    ],
)
def test_loader_refuses_a_checkpoint_that_is_not_from_classify(tmp_path, checkpoint, what):
    path = tmp_path / "other.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(UserFacingError, match=rf"not a `classify` checkpoint \({what}"):
        load_reference_classifier(path)


@pytest.mark.slow
def test_loader_refuses_weights_that_do_not_fit_and_non_finite_weights(reference_run, tmp_path):
    checkpoint = torch.load(reference_run[0] / "reference.ckpt", weights_only=True)
    checkpoint[RUN_CONFIG_KEY]["module"]["net"]["widths"] = [4, 4]
    torch.save(checkpoint, tmp_path / "resized.ckpt")
    with pytest.raises(
        UserFacingError, match="weights do not fit the model its stored config builds"
    ):
        load_reference_classifier(tmp_path / "resized.ckpt")
    checkpoint = torch.load(reference_run[0] / "reference.ckpt", weights_only=True)
    next(v for v in checkpoint["state_dict"].values() if v.is_floating_point()).fill_(torch.nan)
    torch.save(checkpoint, tmp_path / "diverged.ckpt")
    with pytest.raises(UserFacingError, match="NaN or Inf"):
        load_reference_classifier(tmp_path / "diverged.ckpt")


@pytest.mark.slow
def test_reference_refuses_images_of_another_size_or_channel_count(reference_run):
    reference = load_reference_classifier(reference_run[0] / "reference.ckpt")
    reference.check_images(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "set=x")
    for shape in [(2, 3, 8, 8), (2, 1, 16, 16)]:
        with pytest.raises(UserFacingError, match=r"takes 1x8x8 images; set=x has \d+x\d+x\d+"):
            reference.check_images(torch.zeros(shape), "set=x")


@pytest.mark.slow
def test_test_accuracy_comes_from_metrics_json_beside_the_checkpoint(reference_run, tmp_path):
    moved = tmp_path / "reference.ckpt"
    shutil.copy(reference_run[0] / "reference.ckpt", moved)
    assert load_reference_classifier(moved).test_accuracy is None
    (tmp_path / "metrics.json").write_text(json.dumps({"test/acc": 0.25}))
    assert load_reference_classifier(moved).test_accuracy == 0.25
    (tmp_path / "metrics.json").write_text("{truncated")
    with pytest.raises(UserFacingError, match=r"metrics\.json beside it is not a JSON object"):
        load_reference_classifier(moved)


# The committed reference classifier (experiments/quality/reference_classifier.md).
COMMITTED_REFERENCE = (
    REPO_ROOT / "experiments" / "quality" / "reference_classifier" / "reference.ckpt"
)


@pytest.mark.real_data
@pytest.mark.slow
def test_committed_reference_reproduces_its_cifar10_test_accuracy(cifar10_root):
    reference = load_reference_classifier(COMMITTED_REFERENCE)
    # The shared copy is a lossless re-pack: its md5 sums are not the official ones.
    images, labels = load_cifar10(cifar10_root, train=False, download=False, verify_checksums=False)
    reference.check_images(images, "the CIFAR-10 test split")
    overall, per_class = label_fidelity(
        reference.net, images, labels, 10, batch_size=500, autocast_dtype=reference.autocast_dtype
    )
    metrics = json.loads((COMMITTED_REFERENCE.parent / "metrics.json").read_text())
    # bf16 kernels may round a borderline logit differently on another CPU or thread count:
    # allow 2 of the 10,000 test images to flip.
    assert overall == pytest.approx(reference.test_accuracy, abs=2 / len(labels))
    recorded = [metrics["test/per_class_acc"][name] for name in reference.class_names]
    assert per_class.tolist() == pytest.approx(recorded, abs=2 / 1000)
    assert reference.test_accuracy > 0.75  # well above the MLP recipe's 71 %


@pytest.mark.slow
def test_evaluate_reports_label_fidelity_with_its_ceiling(reference_run, digits_test_set, tmp_path):
    """Real test images as a 'generated' set (a set has equal classes: the first 29 of each):
    evaluate's label fidelity is the reference's accuracy on them, per class too, and the
    ceiling is the accuracy its run recorded on the whole test split."""
    run, metrics, _ = reference_run
    images, labels = digits_test_set
    picked = torch.cat([(labels == k).nonzero().flatten()[:29] for k in range(10)])
    images, labels = images[picked], labels[picked]
    write_generated_set(tmp_path / "set", images, labels, shard_size=200, w=0)
    reference = load_reference_classifier(run / "reference.ckpt")
    overall, per_class = label_fidelity(
        reference.net, images, labels, 10, autocast_dtype=reference.autocast_dtype
    )
    overrides = [
        f"set={tmp_path / 'set'}",
        f"reference_classifier={run / 'reference.ckpt'}",
        f"features.weights={save_stand_in(tmp_path / 'standin.pt')}",
        f"cache_dir={tmp_path / 'cache'}",
        f"output_dir={tmp_path / 'evaluate'}",
        *DIGITS8,
        *STAND_IN,
        "reference.per_class=20",
    ]
    quality = evaluate(compose_config("evaluate", overrides))
    assert overall > 0.5  # the reference has learnt something: the check is not vacuous
    assert quality["quality/label_fidelity"] == pytest.approx(overall)
    assert quality["quality/label_fidelity_ceiling"] == pytest.approx(metrics["test/acc"])
    for name, accuracy in zip(reference.class_names, per_class.tolist(), strict=True):
        assert quality[f"quality/label_fidelity_class/{name}"] == pytest.approx(accuracy)


@pytest.mark.slow
def test_evaluate_refuses_a_reference_of_another_image_size(reference_run, tmp_path):
    run, _, _ = reference_run
    overrides = [
        "ckpt=unused.ckpt",
        f"reference_classifier={run / 'reference.ckpt'}",
        "data=digits",
        "img_size=16",
        "features.allow_grey=true",
    ]
    with pytest.raises(
        UserFacingError,
        match=r"takes 1x8x8 images; the data \(img_size=16, data.channels=1\) has 1x16x16",
    ):
        load_reference(compose_config("evaluate", overrides))
