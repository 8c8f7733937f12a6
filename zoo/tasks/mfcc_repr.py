"""The MFCC representation study's tasks (issue 3, docs/mfcc_representations.md): a net turns an utterance's
``(T, n_mfcc)`` MFCC frames into one fixed-length code and classifies it (:mod:`zoo.nets.mfcc`);
:class:`StagedClassifier` trains it in stages, :class:`MFCCStatsSVM` is the classical baseline.

Batches: ``(feats (B, T_max, n_mfcc) zero-padded, lengths (B,), y (B,))`` from
:class:`datamodules.spoken_digits.SpokenDigits` with ``feature: mfcc``. Metric names are
:class:`~zoo.tasks.classifier.Classifier`'s (``train/``, ``val/``, ``test/``).

``predict`` exports codes: ``python -m zoo predict --config configs/mfcc_X.yaml --ckpt_path best.ckpt
--trainer.callbacks+=CodeWriter --trainer.callbacks.output_path codes.npz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from zoo import compat
from zoo.nets.mfcc import MFCCStats, check_batch
from zoo.optim import default_optimizer
from zoo.tasks.classifier import Classifier


class StagedClassifier(Classifier):
    """A representation net (:class:`zoo.nets.mfcc.MeanMFCC`, :class:`~zoo.nets.mfcc.FlatAE`,
    :class:`~zoo.nets.mfcc.RecursivePairAE`) trained in stages, by epoch.

    Epochs ``< ae_epochs`` optimise only the net's autoencoder (``net.pretrain_loss``, logged as
    ``train/recon_loss``); later epochs optimise the head's cross-entropy. With ``freeze_encoder`` the codes are
    computed without gradients (the head trains on frozen codes: the study's "faithful" setting); without it the
    encoder trains jointly, plus ``recon_weight`` x the net's reconstruction error along the representation.
    ``predict`` returns the codes with the predictions (:class:`CodeWriter` saves them).

    Args:
        net: an MFCC representation net: ``represent(x, lengths, with_recon)``, ``pretrain_loss``, ``head``.
        ae_epochs: number of initial epochs that train only the net's autoencoder (0: none).
        freeze_encoder: after the autoencoder epochs train only the head, on detached codes; False: the encoder too.
        recon_weight: weight of the reconstruction error added to the cross-entropy when the encoder trains
            jointly (0: cross-entropy only).
        num_classes: number of target classes; None: the net's num_classes. Must match the data.
        class_names: class labels for the confusion-matrix figure and per-class table; None: the data's, else "0", "1", ...
        label_smoothing: label smoothing of the head's cross-entropy loss, in [0, 1); 0 disables it.
        optimizer: optimizer factory applied to all parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    def __init__(self, net: nn.Module, ae_epochs: int = 0, freeze_encoder: bool = False, recon_weight: float = 0.0,
                 num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 label_smoothing: float = 0.0, optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(net, num_classes, class_names, label_smoothing, optimizer=optimizer, scheduler=scheduler)
        if ae_epochs < 0 or recon_weight < 0:
            raise ValueError(f"StagedClassifier: ae_epochs and recon_weight must be >= 0, got ae_epochs={ae_epochs}, "
                             f"recon_weight={recon_weight}")
        missing = [a for a in ("represent", "head") if not hasattr(net, a)]
        if missing:
            raise ValueError(f"StagedClassifier: the net {type(net).__name__} has no {' / '.join(missing)}; expected "
                             "an MFCC representation net from zoo.nets.mfcc (MeanMFCC, FlatAE, RecursivePairAE)")
        self.ae_epochs, self.freeze_encoder, self.recon_weight = ae_epochs, freeze_encoder, recon_weight

    def setup(self, stage: str) -> None:
        trainer = compat.attached_trainer(self)
        dm = getattr(trainer, "datamodule", None)
        n = getattr(dm, "num_classes", None)
        if isinstance(n, int) and n != self.num_classes:
            raise ValueError(f"{type(self.net).__name__}: model num_classes={self.num_classes} but the data has {n} "
                             f"classes; set --model.net.num_classes {n}")

    def in_pretraining(self) -> bool:
        return self.current_epoch < self.ae_epochs

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, lengths, y = batch
        check_batch(x, lengths, self.net.n_mfcc)
        bs = y.shape[0]
        if self.in_pretraining():
            loss = self.net.pretrain_loss(x, lengths)
            self.log("train/recon_loss", loss, batch_size=bs)
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            return loss
        joint = not self.freeze_encoder
        with torch.set_grad_enabled(joint):
            codes, recon = self.net.represent(x, lengths, with_recon=joint and self.recon_weight > 0)
        logits = self.net.head(codes if joint else codes.detach())
        ce = self._loss(logits, y)
        loss = ce
        if recon is not None:
            recon = recon.mean()
            loss = ce + self.recon_weight * recon
            self.log("train/recon_loss", recon, batch_size=bs)
        self.train_acc.update(logits.detach(), y)  # train/acc: logged once an epoch by Classifier
        self.log("train/ce", ce, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Codes (the exported representation) plus the head's prediction for each utterance."""
        x, lengths, *rest = batch
        codes = self.net.encode(x, lengths)
        logits = self.net.head(codes)
        out = {"code": codes, "length": lengths, "probs": logits.softmax(-1), "pred": logits.argmax(-1)}
        if rest:
            out["target"] = rest[-1]
        return out


class MFCCStatsSVM(Classifier):
    """MFCC statistics (:class:`zoo.nets.mfcc.MFCCStats`: mean/std of frames, optionally of frame deltas) ->
    scikit-learn RBF SVC: a fixed pipeline, so its settings are plain arguments rather than an injected net.

    Runs in the ordinary CLI/data pipeline without an optimizer: training batches are collected, the SVC
    is fitted once on them at the last training batch of the epoch (one epoch is enough: ``max_epochs:
    1``), and validation/test go through the zoo's torchmetrics. The "logits" are the SVC's one-vs-rest
    decision values, so ``val/loss``/``test/loss`` are cross-entropies of decision values, not of
    probabilities. The fitted SVC is stored in the checkpoint as plain arrays (:func:`svm_state`), so the
    checkpoint loads weights-only and a crafted file cannot run code. ``validate``,
    ``test`` or ``predict`` without a fitted SVC (no ``--ckpt_path``) first fit it on the datamodule's
    training split, and say so: for a classical model that one pass is the whole training.

    Args:
        deltas: also use the mean/std of frame-to-frame differences (doubles the feature size).
        C: SVC regularisation parameter; larger values fit the training data more closely.
        gamma: SVC kernel coefficient: "scale", "auto" or a positive float.
        kernel: SVC kernel name (e.g. "rbf", "linear", "poly").
        class_weight: "balanced" weighs each class by the inverse of its share of the training set (for
            unequal classes, e.g. 40 male and 19 female speakers); None: every sample counts the same.
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc.
        num_classes: number of target classes (>= 2; e.g. 10 digits or 2 genders).
        pitch: the data has pitch columns (``--data.pitch_features true``); add their statistics.
        use_mfcc: use the MFCC statistics (False with ``pitch``: classify on the voice's pitch alone).
        formants: the data has formant columns (``--data.formant_features true``); add their means.
    """

    def __init__(self, deltas: bool = True, C: float = 10.0, gamma: str | float = "scale",
                 kernel: str = "rbf", n_mfcc: int = 13, num_classes: int = 10,
                 class_names: Sequence[str] | None = None,
                 class_weight: Literal["balanced"] | None = None, pitch: bool = False,
                 use_mfcc: bool = True, formants: bool = False) -> None:
        super().__init__(MFCCStats(n_mfcc, deltas, pitch, use_mfcc, formants), num_classes, class_names)
        self.automatic_optimization = False
        self.n_mfcc = n_mfcc
        self.svm = None
        self._feats: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def setup(self, stage: str) -> None:
        # before the strategy wraps the model: DDP itself would fail later with a message about parameters
        if self.trainer.world_size > 1:
            raise ValueError(f"MFCCStatsSVM fits one scikit-learn SVM in one process and has nothing to train in "
                             f"parallel; run it with --trainer.devices 1 (got world_size={self.trainer.world_size})")

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(x, lengths)

    def fit_svm(self, feats: np.ndarray, labels: np.ndarray) -> None:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        if len(np.unique(labels)) < 2:
            raise ValueError(f"MFCCStatsSVM: the training data has only one class ({np.unique(labels)}); "
                             f"an SVM needs at least two")
        h = self.hparams
        self.svm = make_pipeline(StandardScaler(), SVC(C=h.C, gamma=h.gamma, kernel=h.kernel,
                                                           class_weight=h.class_weight)).fit(feats, labels)

    def decision_scores(self, feats: np.ndarray) -> np.ndarray:
        """``(N, num_classes)`` decision values; classes absent from training get a very low score."""
        if self.svm is None:
            raise RuntimeError("MFCCStatsSVM is not fitted yet: run fit (or load a fitted checkpoint) first")
        raw = self.svm.decision_function(feats)
        classes = self.svm.classes_
        if raw.ndim == 1:  # binary: positive means classes[1]
            raw = np.stack([-raw, raw], 1)
        out = np.full((len(feats), self.num_classes), -1e4, dtype=np.float32)
        out[:, classes] = raw
        return out

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats = self.features(x, lengths).detach().cpu().double().numpy()
        return torch.as_tensor(self.decision_scores(feats), device=x.device)

    def on_train_epoch_start(self) -> None:
        self._feats, self._labels = [], []

    def training_step(self, batch, batch_idx: int) -> None:
        x, lengths, y = batch
        self._feats.append(self.features(x, lengths).detach().cpu())
        self._labels.append(y.detach().cpu())
        if batch_idx == self.trainer.num_training_batches - 1:
            self._fit_collected()

    def on_train_epoch_end(self) -> None:
        if self._feats:  # epoch ended early (e.g. an unknown number of batches)
            self._fit_collected()
        super().on_train_epoch_end()  # logs train/acc from train_acc, as for every classifier

    def _fit_collected(self) -> None:
        feats = torch.cat(self._feats).double().numpy()
        labels = torch.cat(self._labels).numpy()
        self._feats, self._labels = [], []
        self.fit_svm(feats, labels)
        # the fit is this module's one optimisation step: count it, so global_step advances and the
        # checkpoint callback (which skips saving when global_step has not moved) stores the fitted SVM
        compat.count_manual_optimizer_step(self.trainer)
        scores = torch.as_tensor(self.decision_scores(feats))
        y = torch.as_tensor(labels)
        self.log("train/loss", F.cross_entropy(scores, y), batch_size=len(y))
        self.train_acc.update(scores, y)  # logged at the epoch's end by Classifier.on_train_epoch_end

    def _fit_from_datamodule(self) -> None:
        if self.svm is not None or self.trainer.state.fn == "fit":
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_dataloader"):
            raise RuntimeError("MFCCStatsSVM is not fitted and there is no datamodule with a training split to "
                               "fit it on: run fit first or pass --ckpt_path of a fitted checkpoint")
        rank_zero_info("MFCCStatsSVM: not fitted (no checkpoint given); fitting it on the training split first")
        feats, labels = [], []
        for x, lengths, y in dm.train_dataloader():
            feats.append(self.features(x, lengths))
            labels.append(y)
        self.fit_svm(torch.cat(feats).double().numpy(), torch.cat(labels).numpy())

    def on_validation_start(self) -> None:
        self._fit_from_datamodule()

    def on_test_start(self) -> None:
        self._fit_from_datamodule()

    def on_predict_start(self) -> None:
        self._fit_from_datamodule()

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.svm is None:  # sanity check before any training: nothing to evaluate
            return
        super().validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, lengths, *rest = batch
        scores = self(x, lengths)
        # "probs": a softmax of the one-vs-rest decision values, a confidence for the prediction writer,
        # not a calibrated probability (an SVC fitted with Platt scaling would cost a 5-fold refit)
        out = {"code": self.features(x, lengths), "length": lengths, "probs": scores.float().softmax(-1),
               "pred": scores.argmax(-1)}
        if rest:
            out["target"] = rest[-1]
        return out

    def configure_optimizers(self):
        return None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.svm is not None:
            checkpoint["svm_state"] = svm_state(self.svm)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainer = compat.attached_trainer(self)
        where = f"checkpoint {trainer.ckpt_path}" if trainer is not None and trainer.ckpt_path else "this checkpoint"
        if "sklearn_svm" in checkpoint:  # written before the SVM was stored as arrays: never unpickled
            raise ValueError(
                f"MFCCStatsSVM: {where} stores its SVM as pickled bytes ('sklearn_svm'), which the zoo no longer loads "
                "because a crafted file could run code. Retrain it (`python -m zoo fit --config configs/mfcc_svm.yaml`"
                ": one pass over the data), or, only for a file you trust, convert it as docs/reliability.md "
                "(converting an old SVM checkpoint) shows")
        state = checkpoint.get("svm_state")
        try:
            self.svm = svm_from_state(state) if state is not None else None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"MFCCStatsSVM: {where} has an invalid 'svm_state' ({type(e).__name__}: {e}); "
                             "retrain it with `python -m zoo fit --config configs/mfcc_svm.yaml`") from e


SVM_STATE_VERSION = 1


def svm_state(pipeline) -> dict:
    """A fitted ``StandardScaler -> SVC`` pipeline as tensors and plain values, for a weights-only checkpoint.

    These are exactly the fitted attributes libsvm predicts from (support vectors, dual coefficients,
    intercepts, class sizes, the gamma actually used, Platt parameters) and the scaler statistics, so
    :func:`svm_from_state` rebuilds a model with bit-identical decision values.
    """
    scaler, svc = pipeline[0], pipeline[-1]
    t = lambda a: torch.from_numpy(np.array(a, copy=True))  # noqa: E731
    return {
        "version": SVM_STATE_VERSION,
        "scaler_params": scaler.get_params(), "mean": t(scaler.mean_), "var": t(scaler.var_),
        "scale": t(scaler.scale_), "n_samples_seen": t(scaler.n_samples_seen_),
        "svc_params": svc.get_params(),
        "probability": bool(getattr(svc, "_effective_probability", svc.probability is True)),
        "support": t(svc.support_), "support_vectors": t(svc.support_vectors_), "n_support": t(svc._n_support),
        "dual_coef": t(svc._dual_coef_), "intercept": t(svc._intercept_), "prob_a": t(svc._probA),
        "prob_b": t(svc._probB), "classes": t(svc.classes_), "class_weight": t(svc.class_weight_),
        "gamma": float(svc._gamma), "n_iter": t(svc.n_iter_), "fit_status": int(svc.fit_status_),
        "shape_fit": [int(n) for n in svc.shape_fit_],
    }


def svm_from_state(state: dict):
    """The pipeline :func:`svm_state` stored, with the attributes ``SVC.fit`` would have set."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if state.get("version") != SVM_STATE_VERSION:
        raise ValueError(f"unknown svm_state version {state.get('version')!r} (this code reads {SVM_STATE_VERSION})")
    a = {k: v.numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
    scaler = StandardScaler(**state["scaler_params"])
    scaler.mean_, scaler.var_, scaler.scale_ = a["mean"], a["var"], a["scale"]
    scaler.n_samples_seen_ = a["n_samples_seen"] if a["n_samples_seen"].ndim else int(a["n_samples_seen"])
    scaler.n_features_in_ = len(a["mean"])
    svc = SVC(**state["svc_params"])
    svc.support_, svc.support_vectors_, svc._n_support = a["support"], a["support_vectors"], a["n_support"]
    svc._dual_coef_, svc._intercept_ = a["dual_coef"], a["intercept"]
    svc._probA, svc._probB, svc.classes_, svc.class_weight_ = a["prob_a"], a["prob_b"], a["classes"], a["class_weight"]
    svc._gamma, svc.n_iter_, svc._num_iter = state["gamma"], a["n_iter"], a["n_iter"]
    svc.fit_status_, svc.shape_fit_, svc._sparse = state["fit_status"], tuple(state["shape_fit"]), False
    svc._effective_probability = state["probability"]
    svc.n_features_in_ = a["support_vectors"].shape[1]
    # SVC.fit flips the public sign in the binary case; predictions use the private (libsvm) copies
    binary = len(svc.classes_) == 2
    svc.dual_coef_ = -svc._dual_coef_ if binary else svc._dual_coef_
    svc.intercept_ = -svc._intercept_ if binary else svc._intercept_.copy()
    return make_pipeline(scaler, svc)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
class CodeWriter(BasePredictionWriter):
    """Writes the representations from ``predict`` to ``output_path`` (``.npz``: ``code``, ``length``,
    ``pred``, ``target`` when the data has labels), in dataloader order, for use outside the zoo."""

    def __init__(self, output_path: str = "codes.npz") -> None:
        super().__init__(write_interval="epoch")
        if not str(output_path).endswith(".npz"):
            raise ValueError(f"CodeWriter output_path must end in .npz, got {output_path!r}")
        self.output_path = Path(output_path)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not batches:
            raise RuntimeError("CodeWriter: predict produced no batches")
        arrays = {k: torch.cat([b[k].detach().cpu() for b in batches]).numpy()
                  for k in batches[0] if k in ("code", "length", "pred", "target")}
        path = self.output_path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}.npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
