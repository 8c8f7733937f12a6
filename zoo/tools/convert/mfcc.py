"""Legacy checkpoint rules: the MFCC representation study and the audio-to-image VAE.

``zoo.mfcc_repr.{MeanMFCC, FlatAE, SequentialAE, GreedyPairAE}`` became
:class:`zoo.tasks.mfcc_repr.StagedClassifier` around a :mod:`zoo.nets.mfcc` net (``SequentialAE`` and
``GreedyPairAE`` are ``RecursivePairAE(merge="sequential" / "greedy")``; their ``mode`` also set the task's
``freeze_encoder``: faithful = frozen). ``zoo.mfcc_repr.MFCCStatsSVM`` moved to ``zoo.tasks.mfcc_repr`` with the
same arguments (its SVM stays in the checkpoint's ``svm_state``). ``zoo.audio_to_image.AudioToImageVAE`` became
:class:`zoo.tasks.audio_to_image.AudioToImageVAE` around :class:`zoo.nets.audio_to_image.MFCCToImageVAE`.
"""

from __future__ import annotations

from typing import Any

from zoo.tools.convert import prefix_keys

STAGED = "zoo.tasks.mfcc_repr.StagedClassifier"
# torchmetrics states are not persistent; kept out of the net prefix should an old file carry them anyway
METRICS = ("train_acc.", "val_acc.", "test_acc.", "test_metrics.", "test_confusion.")
TASK_ARGS = ("class_names", "label_smoothing", "optimizer", "scheduler")


def _pick(hparams: dict[str, Any], names, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``names`` present in ``hparams``, with the old class's ``defaults`` for those missing."""
    out = {k: hparams[k] for k in names if k in hparams}
    return {**{k: v for k, v in (defaults or {}).items() if k not in out}, **out}


def _staged(net_path: str, net_args: tuple[str, ...], net_fixed=None, stages=None):
    """Rule for an old MFCCCodeClassifier subclass. ``stages(hparams)`` gives the task's ae_epochs,
    freeze_encoder and recon_weight as the old class fixed or defaulted them; ``net_fixed(hparams)`` the
    net arguments the old class implied."""
    def rule(hparams: dict[str, Any], state_dict: dict[str, Any]):
        net = {**_pick(hparams, net_args), **(net_fixed(hparams) if net_fixed else {})}
        task = {"_class_path": STAGED, "net": {"class_path": net_path, "init_args": net}, **stages(hparams),
                **_pick(hparams, TASK_ARGS)}
        return task, prefix_keys(state_dict, "net.", keep=METRICS)
    return rule


def _pair(merge: str):
    return _staged(
        "zoo.nets.mfcc.RecursivePairAE", ("mode", "n_mfcc", "ae_hidden", "hidden", "dropout", "num_classes"),
        net_fixed=lambda hp: {"merge": merge, "mode": hp.get("mode", "faithful")},
        stages=lambda hp: {"ae_epochs": hp.get("ae_epochs", 10),
                           "freeze_encoder": hp.get("mode", "faithful") == "faithful",
                           "recon_weight": hp.get("recon_weight", 1.0)})


def _svm(hparams: dict[str, Any], state_dict: dict[str, Any]):
    """Same arguments and (empty) state dict; the fitted SVM stays in the checkpoint's ``svm_state``."""
    args = _pick(hparams, ("deltas", "C", "gamma", "kernel", "n_mfcc", "num_classes", "class_names", "class_weight"))
    return {"_class_path": "zoo.tasks.mfcc_repr.MFCCStatsSVM", **args}, dict(state_dict)


def _vae(hparams: dict[str, Any], state_dict: dict[str, Any]):
    net = _pick(hparams, ("n_mfcc", "audio_frames", "hidden", "latent_dim", "dropout", "decoder_channels"))
    task = _pick(hparams, ("kl_weight", "judge_checkpoint", "judge_normalize", "n_show", "optimizer", "scheduler"))
    return ({"_class_path": "zoo.tasks.audio_to_image.AudioToImageVAE",
             "net": {"class_path": "zoo.nets.audio_to_image.MFCCToImageVAE", "init_args": net}, **task},
            prefix_keys(state_dict, "net.", keep=METRICS))


RULES = {
    "zoo.mfcc_repr.MeanMFCC": _staged(
        "zoo.nets.mfcc.MeanMFCC", ("n_mfcc", "hidden", "dropout", "num_classes"),
        stages=lambda hp: {"ae_epochs": 0, "freeze_encoder": False, "recon_weight": 0.0}),
    "zoo.mfcc_repr.FlatAE": _staged(
        "zoo.nets.mfcc.FlatAE", ("n_mfcc", "max_frames", "code_dim", "ae_hidden", "hidden", "dropout", "num_classes"),
        stages=lambda hp: _pick(hp, ("ae_epochs", "freeze_encoder", "recon_weight"),
                                {"ae_epochs": 20, "freeze_encoder": True, "recon_weight": 0.0})),
    "zoo.mfcc_repr.SequentialAE": _pair("sequential"),
    "zoo.mfcc_repr.GreedyPairAE": _pair("greedy"),
    "zoo.mfcc_repr.MFCCStatsSVM": _svm,
    "zoo.audio_to_image.AudioToImageVAE": _vae,
}
