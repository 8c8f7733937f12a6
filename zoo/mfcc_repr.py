"""Fixed-length representations of variable-length MFCC sequences, each followed by a classifier (issue 3).

The study: turn an utterance's ``(T, 13)`` MFCC frames into one vector, then classify the digit from that
vector. Every method here is a :class:`~zoo.classifier.Classifier` fed the spoken-digit batches
``(feats (B, T_max, n_mfcc) zero-padded, lengths (B,), y (B,))``; padding frames never enter a
representation.

* :class:`MeanMFCC`: mean of the real frames -> MLP head.
* :class:`FlatAE` (A): frames zero-padded/truncated to ``max_frames``, flattened, compressed by a dense
  autoencoder; the code is the representation.
* :class:`SequentialAE` (B): a pair autoencoder compresses ``[frame1, frame2]`` into a frame-sized code,
  then ``[code, frame3]``, ... to the last real frame; the final code is the representation.
* :class:`GreedyPairAE` (C): a recursive autoencoder (Socher et al. 2011). Per utterance every adjacent
  pair is scored by the pair autoencoder's reconstruction error, the lowest is merged into one vector,
  its two new neighbour pairs are re-scored, until one vector remains. Ties go to the leftmost pair.
  :func:`greedy_merge` does this for a whole batch at once (one tensor operation per merge step);
  :func:`greedy_merge_reference` is the slow per-utterance version it is tested and benchmarked against.
* :class:`MFCCStatsSVM`: classical baseline, mean/std of frames and of frame deltas -> scikit-learn SVC,
  in the same CLI and data pipeline (digit or gender targets).

Training is staged by epoch: for the first ``ae_epochs`` epochs only the autoencoder's reconstruction
loss is optimised (``train/recon_loss``); afterwards the classifier head is trained with cross-entropy.

B and C have two ``mode`` settings:

* ``faithful`` (what the study did): the pair autoencoder is pre-trained on *raw adjacent frame pairs*,
  then frozen; the recursion feeds it its own codes, which it never saw in training, and the head is
  trained on the frozen final codes.
* ``improved``: (1) codes are layer-normalised (zero mean, unit variance per code) so a code looks like a
  standardised frame to the next step and cannot shrink to a trivially reconstructable zero; (1b) the
  pair encoder is gated (a softmax mix of left, right and a new vector per coefficient, see
  :class:`PairAutoencoder`), so information and gradients survive long recursions; (2) the
  reconstruction loss is taken at every merge *of the actual recursion / greedy tree* (the inputs of each
  merge, detached, are the targets), so the autoencoder is trained on the distribution it is applied to;
  (3) the cross-entropy of the head is back-propagated through the recursion / tree jointly with
  ``recon_weight`` x that reconstruction loss. In C the tree shape is chosen greedily without gradients;
  the merges along it carry gradients.

``predict`` exports codes: ``python -m zoo predict --config configs/mfcc_X.yaml --ckpt_path best.ckpt
--trainer.callbacks+=CodeWriter --trainer.callbacks.output_path codes.npz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from zoo import compat
from zoo.optim import default_optimizer
from zoo.tasks.classifier import Classifier

Mode = Literal["faithful", "improved"]


# --------------------------------------------------------------------------------------------------
# batch helpers
# --------------------------------------------------------------------------------------------------
def check_batch(x: torch.Tensor, lengths: torch.Tensor, n_mfcc: int | None = None) -> None:
    """Reject batches that are not ``(B, T, n_mfcc)`` frames with ``1 <= lengths <= T``."""
    if x.dim() != 3:
        raise ValueError(f"expected an MFCC batch of shape (B, T, n_mfcc) (use --data.feature mfcc), "
                         f"got shape {tuple(x.shape)}")
    if n_mfcc is not None and x.shape[-1] != n_mfcc:
        raise ValueError(f"expected {n_mfcc} MFCC coefficients per frame (model n_mfcc), got {x.shape[-1]}; "
                         f"make --model.n_mfcc match --data.n_mfcc")
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}")
    if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
        raise ValueError(f"lengths must be in [1, {x.shape[1]}] (frames of the padded batch), "
                         f"got min {int(lengths.min())}, max {int(lengths.max())}")


def frame_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """``(B, T)`` boolean mask of real (non-padding) frames."""
    return torch.arange(T, device=lengths.device)[None] < lengths[:, None]


def masked_mean_std(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) standard deviation over the real frames of each utterance."""
    m = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    n = lengths.to(x.dtype).clamp(min=1).unsqueeze(-1)
    mean = (x * m).sum(1) / n
    var = (((x - mean[:, None]) * m) ** 2).sum(1) / n
    return mean, var.clamp(min=0).sqrt()


def mfcc_statistics(x: torch.Tensor, lengths: torch.Tensor, deltas: bool = True) -> torch.Tensor:
    """Mean/std of frames (and of first differences of frames): the classical fixed-length summary."""
    mean, std = masked_mean_std(x, lengths)
    feats = [mean, std]
    if deltas:
        d = x[:, 1:] - x[:, :-1] if x.shape[1] > 1 else x[:, :0]
        # an utterance with one frame has no delta: its delta statistics are zero
        dmean, dstd = masked_mean_std(d, (lengths - 1).clamp(min=0)) if d.shape[1] else (mean * 0, std * 0)
        feats += [dmean, dstd]
    return torch.cat(feats, -1)


def pad_or_truncate(x: torch.Tensor, lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """``(B, max_frames, D)``: real frames first, zero padding after, longer utterances cut."""
    x = x * frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    if x.shape[1] >= max_frames:
        return x[:, :max_frames]
    return F.pad(x, (0, 0, 0, max_frames - x.shape[1]))


def mlp_head(code_dim: int, hidden: int, num_classes: int, dropout: float) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(code_dim, num_classes)
    return nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


# --------------------------------------------------------------------------------------------------
# the pair autoencoder and the two recursions (B: sequential, C: greedy)
# --------------------------------------------------------------------------------------------------
class PairAutoencoder(nn.Module):
    """Compresses two ``dim``-vectors into one ``dim``-vector and reconstructs the pair from it.

    Hidden units are sigmoids: the same function class as tanh (``tanh(z) = 2 sigmoid(2z) - 1``, the affine
    part absorbed by the next layer), but torch's CPU ``tanh`` kernel was measured ~20x slower than
    ``sigmoid`` on this machine, and the greedy merge is bound by these small element-wise ops.

    ``gated``: the code is a per-coefficient convex mix of ``left``, ``right`` and a new vector, with
    softmax gates computed from the pair (a highway connection). Still a pair -> frame-sized code
    compression, but a long recursion can carry information (and gradients) through many merges.
    """

    def __init__(self, dim: int = 13, hidden: int = 64, normalize_codes: bool = False, gated: bool = False) -> None:
        super().__init__()
        self.dim, self.gated = dim, gated
        self.encoder = nn.Sequential(nn.Linear(2 * dim, hidden), nn.Sigmoid(),
                                     nn.Linear(hidden, 4 * dim if gated else dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Linear(hidden, 2 * dim))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False) if normalize_codes else nn.Identity()

    def encode(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        out = self.encoder(torch.cat([left, right], -1))
        if self.gated:
            new, gates = out[..., : self.dim], out[..., self.dim:].unflatten(-1, (3, self.dim)).softmax(-2)
            out = gates[..., 0, :] * left + gates[..., 1, :] * right + gates[..., 2, :] * new
        return self.norm(out)

    def recon_error(self, code: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Mean squared error of reconstructing ``[left, right]`` (targets detached) from ``code``."""
        return F.mse_loss(self.decoder(code), torch.cat([left, right], -1).detach(), reduction="none").mean(-1)

    def score(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(code, reconstruction error)`` of each pair; the error is the greedy merge's score."""
        code = self.encode(left, right)
        return code, self.recon_error(code, left, right)

    def error(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """The merge score: reconstruction error of the pair, one value per pair."""
        return self.score(left, right)[1]


def frame_pair_loss(ae: PairAutoencoder, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean reconstruction error over all adjacent pairs of *raw* frames (the study's training data)."""
    if x.shape[1] < 2:
        raise ValueError("frame-pair training needs utterances of at least 2 frames")
    err = ae.error(x[:, :-1], x[:, 1:])
    valid = frame_mask(lengths - 1, x.shape[1] - 1)
    if not valid.any():
        raise ValueError("frame-pair training needs utterances of at least 2 frames")
    return err[valid].mean()


def sequential_encode(ae: PairAutoencoder, x: torch.Tensor, lengths: torch.Tensor,
                      with_recon: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Method B: ``code = f1; code = enc([code, f_t])`` for t = 2..length. Batched over utterances.

    Returns the final codes ``(B, D)`` and, if asked, each utterance's mean reconstruction error over its
    recursion steps (``(B,)``, zero for one-frame utterances).
    """
    B, T, D = x.shape
    code = x[:, 0]
    recon = x.new_zeros(B) if with_recon else None
    for t in range(1, int(lengths.max())):
        new = ae.encode(code, x[:, t])
        active = t < lengths
        if with_recon:
            recon = recon + torch.where(active, ae.recon_error(new, code, x[:, t]), 0.0)
        code = torch.where(active[:, None], new, code)
    if with_recon:
        recon = recon / (lengths - 1).clamp(min=1).to(recon.dtype)
    return code, recon


class MergeResult(NamedTuple):
    codes: torch.Tensor            # (B, D) the root vector of each utterance
    order: torch.Tensor | None     # (B, T-1) position merged at each step, -1 once an utterance is done
    recon: torch.Tensor | None     # (B,) mean reconstruction error of the merges, if asked


def greedy_merge(ae: PairAutoencoder, x: torch.Tensor, lengths: torch.Tensor,
                 with_recon: bool = False, return_order: bool = True) -> MergeResult:
    """Method C, batched: greedy bottom-up merging of all utterances of a batch at once.

    Utterances are sorted longest first, so the ones still merging at step ``s`` (length > s + 1) are a
    prefix of the batch and each step works on that prefix only. Vectors live in fixed slots (nothing is
    copied per step): a merge writes the new vector into the left slot and unlinks the right one from a
    doubly linked list (``nxt``/``prv`` slot tensors). Each step, for every unfinished utterance at once:
    take the lowest pair score (leftmost on ties, since slots keep sequence order), merge it, and
    re-score its two new neighbour pairs in one call of the autoencoder. Pairs touching padding score
    ``+inf`` and are never chosen. Scores are computed without gradients (they only pick the tree).
    Without gradients the merged vector is the code cached when its pair was scored; with gradients it
    is recomputed, so a loss on the codes trains through the tree. Lookups are flat
    ``index_select``/``index_copy_`` (much cheaper on CPU than advanced indexing).
    """
    check_batch(x, lengths)
    B, T, D = x.shape
    dev = x.device
    lens = lengths.tolist()
    steps = max(lens) - 1
    if steps == 0:
        order = torch.full((B, max(T - 1, 0)), -1, dtype=torch.long, device=dev) if return_order else None
        return MergeResult(x[:, 0], order, x.new_zeros(B) if with_recon else None)
    grad = torch.is_grad_enabled()
    perm = torch.argsort(lengths, descending=True, stable=True)
    inv = torch.argsort(perm)
    x, lengths = x.index_select(0, perm), lengths.index_select(0, perm)
    sorted_lens = sorted(lens, reverse=True)
    rows_at = [sum(1 for L in sorted_lens if L > s + 1) for s in range(steps)]  # prefix still merging
    S = T + 1                                    # slots per row: T frames + an always-invalid slot T
    base = torch.arange(B, device=dev) * S       # flat offset of each row
    seq = F.pad(x, (0, 0, 0, 1)).reshape(B * S, D)   # a fresh tensor, safe to write in place
    slot = torch.arange(S, device=dev).expand(B, S)
    nxt = (slot + 1).clamp(max=T).reshape(-1).clone()   # right neighbour slot
    prv = (slot - 1).reshape(-1).clone()                 # left neighbour slot (-1 at the start)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=dev)
    # under autocast the pair AE returns reduced-precision codes and scores: the merge state (and the
    # scores it takes argmins of) stays in the input's dtype, so casts go where the AE's outputs come in
    with torch.no_grad():
        cand, first = ae.score(x[:, :-1], x[:, 1:])           # candidate code and score of every pair
        cand, first = cand.to(x.dtype), first.to(x.dtype)
        cand = F.pad(cand, (0, 0, 0, 2)).reshape(B * S, D)
        scores = F.pad(torch.where(slot[:, : T - 1] < (lengths - 1)[:, None], first, inf), (0, 2),
                       value=float("inf"))                     # (B, S)
    flat_scores = scores.view(-1)
    if return_order:
        left_slots = torch.full((B, steps), -1, dtype=torch.long, device=dev)
        right_slots = torch.full((B, steps), -1, dtype=torch.long, device=dev)
    recon = x.new_zeros(B) if with_recon else None
    for step, k in enumerate(rows_at):
        bk, lk = base[:k], lengths[:k]
        i = scores[:k].argmin(1)
        fi = bk + i
        j = nxt.index_select(0, fi)
        fj = bk + j
        if grad or with_recon:
            left, right = seq.index_select(0, fi), seq.index_select(0, fj)
            merged = ae.encode(left, right).to(seq.dtype)
            if with_recon:
                recon = recon + F.pad(ae.recon_error(merged, left, right).to(recon.dtype), (0, B - k))
        else:
            merged = cand.index_select(0, fi)
        seq.index_copy_(0, fi, merged)
        if return_order:
            left_slots[:k, step] = i
            right_slots[:k, step] = j
        # unlink j: i's right neighbour becomes j's right neighbour
        nj = nxt.index_select(0, fj)
        nxt.index_copy_(0, fi, nj)
        prv.index_copy_(0, bk + nj, i)
        with torch.no_grad():
            flat_scores.index_fill_(0, fj, float("inf"))
            p = prv.index_select(0, fi)
            ok_p, ok_i = p >= 0, nj < lk
            # the two new pairs (p, i) and (i, nj); a missing one is scored at the invalid slot T instead
            left_idx = torch.cat([bk + torch.where(ok_p, p, T), fi])
            right_idx = torch.cat([bk + torch.where(ok_p, i, T), bk + torch.where(ok_i, nj, T)])
            src = seq.detach()
            codes, fresh = ae.score(src.index_select(0, left_idx), src.index_select(0, right_idx))
            flat_scores.index_copy_(0, left_idx, torch.where(torch.cat([ok_p, ok_i]), fresh.to(inf.dtype), inf))
            if not grad:
                cand.index_copy_(0, left_idx, codes.to(cand.dtype))
    codes = seq.view(B, S, D)[:, 0].index_select(0, inv)
    if with_recon:
        recon = (recon / (lengths - 1).clamp(min=1).to(recon.dtype)).index_select(0, inv)
    order = _merge_positions(left_slots, right_slots, T).index_select(0, inv) if return_order else None
    return MergeResult(codes, order, recon)


def _merge_positions(left_slots: torch.Tensor, right_slots: torch.Tensor, T: int) -> torch.Tensor:
    """Slot of each merge -> its position in the sequence at that step (slot minus slots removed before)."""
    B, S = left_slots.shape
    earlier = torch.ones(S, S, dtype=torch.bool, device=left_slots.device).tril(-1)  # [s, t]: t < s
    removed_before = ((right_slots[:, None, :] >= 0) & (right_slots[:, None, :] < left_slots[:, :, None])
                      & earlier).sum(-1)
    pos = torch.where(left_slots >= 0, left_slots - removed_before, -1)
    return F.pad(pos, (0, max(T - 1 - S, 0)), value=-1)


def greedy_merge_reference(ae: PairAutoencoder, frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Slow, obviously-correct greedy merge of ONE utterance ``(T, D)`` (real frames only).

    Every step scores every adjacent pair from scratch, merges the lowest (smallest index on ties),
    and repeats until one vector is left. Used by the tests and the benchmark as ground truth.
    Gradients flow through the merges when enabled (the tests compare them with the batched version's).
    """
    seq = list(frames)
    order: list[int] = []
    while len(seq) > 1:
        errors = ae.error(torch.stack(seq[:-1]), torch.stack(seq[1:])).tolist()
        i = min(range(len(errors)), key=lambda k: (errors[k], k))
        merged = ae.encode(seq[i][None], seq[i + 1][None])[0]
        seq[i:i + 2] = [merged]
        order.append(i)
    return seq[0], order


# --------------------------------------------------------------------------------------------------
# LightningModules
# --------------------------------------------------------------------------------------------------
class MFCCCodeClassifier(Classifier):
    """Base of the representation methods: ``represent`` gives a fixed-length code, an MLP head classifies.

    Staged training by epoch: epochs ``< ae_epochs`` optimise only ``pretrain_loss`` (the autoencoder's
    reconstruction); later epochs optimise the head's cross-entropy, plus ``recon_weight`` x the
    reconstruction along the representation when the encoder is trained jointly (``freeze_encoder`` off).
    """

    def __init__(self, code_dim: int, n_mfcc: int = 13, hidden: int = 128, dropout: float = 0.1,
                 ae_epochs: int = 0, freeze_encoder: bool = True, recon_weight: float = 0.0,
                 num_classes: int = 10, class_names: Sequence[str] | None = None, label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(num_classes, class_names, label_smoothing, optimizer, scheduler)
        if ae_epochs < 0:
            raise ValueError(f"ae_epochs must be >= 0, got {ae_epochs}")
        self.n_mfcc, self.code_dim = n_mfcc, code_dim
        self.ae_epochs, self.freeze_encoder, self.recon_weight = ae_epochs, freeze_encoder, recon_weight
        self.head = mlp_head(code_dim, hidden, num_classes, dropout)

    # --- subclasses override ---------------------------------------------------------------------
    def represent(self, x: torch.Tensor, lengths: torch.Tensor,
                  with_recon: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(codes (B, code_dim), per-utterance reconstruction error (B,) or None)``."""
        raise NotImplementedError  # pragma: no cover

    def pretrain_loss(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss of the autoencoder-only epochs."""
        raise NotImplementedError(f"{type(self).__name__} has no autoencoder: set ae_epochs to 0")

    # --- shared ----------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        check_batch(x, lengths, self.n_mfcc)
        return self.represent(x, lengths)[0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x, lengths))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        n = getattr(dm, "num_classes", None)
        if isinstance(n, int) and n != self.num_classes:
            raise ValueError(f"{type(self).__name__}: model num_classes={self.num_classes} but the data has {n} "
                             f"classes; set --model.num_classes {n}")

    def in_pretraining(self) -> bool:
        return self.current_epoch < self.ae_epochs

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, lengths, y = batch
        check_batch(x, lengths, self.n_mfcc)
        bs = y.shape[0]
        if self.in_pretraining():
            loss = self.pretrain_loss(x, lengths)
            self.log("train/recon_loss", loss, batch_size=bs)
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            return loss
        joint = not self.freeze_encoder
        with torch.set_grad_enabled(joint):
            codes, recon = self.represent(x, lengths, with_recon=joint and self.recon_weight > 0)
        logits = self.head(codes if joint else codes.detach())
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
        codes = self.encode(x, lengths)
        logits = self.head(codes)
        out = {"code": codes, "length": lengths, "probs": logits.softmax(-1), "pred": logits.argmax(-1)}
        if rest:
            out["target"] = rest[-1]
        return out


class MeanMFCC(MFCCCodeClassifier):
    """Baseline: the mean of the utterance's real frames (padding excluded) -> MLP head.

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc (it is also the code size).
        hidden: width of the two hidden layers of the MLP head; <= 0: a single linear layer.
        dropout: dropout probability after each hidden layer of the head (unused when hidden <= 0).
        num_classes: number of target classes (>= 2; must match the data, e.g. 10 digits or 2 genders).
        label_smoothing: label smoothing of the head's cross-entropy loss, in [0, 1); 0 disables it.
        optimizer: optimizer factory applied to all parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
    """

    def __init__(self, n_mfcc: int = 13, hidden: int = 128, dropout: float = 0.1, num_classes: int = 10,
                 class_names: Sequence[str] | None = None, label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(n_mfcc, n_mfcc, hidden, dropout, 0, False, 0.0, num_classes, class_names,
                         label_smoothing, optimizer, scheduler)
        self.save_hyperparameters()

    def represent(self, x, lengths, with_recon=False):
        return masked_mean_std(x, lengths)[0], None


class FlatAE(MFCCCodeClassifier):
    """Method A: ``max_frames`` frames (zero-padded, longer utterances cut) flattened -> dense autoencoder.

    Cutting is reported once per run with the fraction of utterances it affected, never silently.

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc.
        max_frames: frames kept per utterance: shorter ones are zero-padded, longer ones cut (with a warning).
        code_dim: size of the autoencoder's code, the fixed-length representation fed to the head.
        ae_hidden: widths of the encoder's hidden layers (mirrored in the decoder).
        hidden: width of the two hidden layers of the MLP head; <= 0: a single linear layer.
        dropout: dropout probability after each hidden layer of the head (unused when hidden <= 0).
        ae_epochs: number of initial epochs that train only the autoencoder's reconstruction loss.
        freeze_encoder: after the AE epochs, train only the head on detached codes; False: train the encoder too.
        recon_weight: weight of the reconstruction loss added to the cross-entropy when the encoder is not frozen.
        num_classes: number of target classes (>= 2; must match the data, e.g. 10 digits or 2 genders).
        label_smoothing: label smoothing of the head's cross-entropy loss, in [0, 1); 0 disables it.
        optimizer: optimizer factory applied to all parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
    """

    def __init__(self, n_mfcc: int = 13, max_frames: int = 100, code_dim: int = 64,
                 ae_hidden: Sequence[int] = (512, 256), hidden: int = 128, dropout: float = 0.1,
                 ae_epochs: int = 20, freeze_encoder: bool = True, recon_weight: float = 0.0,
                 num_classes: int = 10, class_names: Sequence[str] | None = None, label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(code_dim, n_mfcc, hidden, dropout, ae_epochs, freeze_encoder, recon_weight,
                         num_classes, class_names, label_smoothing, optimizer, scheduler)
        self.save_hyperparameters()
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.max_frames = max_frames
        sizes = [max_frames * n_mfcc, *ae_hidden, code_dim]
        enc, dec = [], []
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        for a, b in zip(sizes[::-1][:-1], sizes[::-1][1:]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*enc[:-1])  # linear code
        self.decoder = nn.Sequential(*dec[:-1])  # linear reconstruction
        self._warned_cut = False

    def _flat(self, x, lengths):
        if not self._warned_cut and int(lengths.max()) > self.max_frames:
            frac = (lengths > self.max_frames).float().mean().item()
            rank_zero_warn(f"FlatAE: utterances longer than max_frames={self.max_frames} are cut "
                           f"({frac:.1%} of the first such batch); raise --model.max_frames to keep them whole")
            self._warned_cut = True
        return pad_or_truncate(x, lengths, self.max_frames).flatten(1)

    def represent(self, x, lengths, with_recon=False):
        flat = self._flat(x, lengths)
        code = self.encoder(flat)
        recon = ((self.decoder(code) - flat) ** 2).mean(-1) if with_recon else None
        return code, recon

    def pretrain_loss(self, x, lengths):
        return self.represent(x, lengths, with_recon=True)[1].mean()


class _PairAEClassifier(MFCCCodeClassifier):
    """Shared by B and C: a :class:`PairAutoencoder`, faithful or improved training (module docstring).

    Args:
        mode: "faithful": AE pre-trained on raw frame pairs, then frozen; "improved": normalised, gated, joint training.
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc (it is also the code size).
        ae_hidden: width of the pair autoencoder's hidden layer (encoder and decoder).
        hidden: width of the two hidden layers of the MLP head; <= 0: a single linear layer.
        dropout: dropout probability after each hidden layer of the head (unused when hidden <= 0).
        ae_epochs: number of initial epochs that train only the pair autoencoder's reconstruction loss.
        recon_weight: weight of the reconstruction loss added to the cross-entropy ("improved" mode only).
        num_classes: number of target classes (>= 2; must match the data, e.g. 10 digits or 2 genders).
        label_smoothing: label smoothing of the head's cross-entropy loss, in [0, 1); 0 disables it.
        optimizer: optimizer factory applied to all parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
    """

    def __init__(self, mode: Mode, n_mfcc: int, ae_hidden: int, hidden: int, dropout: float, ae_epochs: int,
                 recon_weight: float, num_classes: int, class_names, label_smoothing, optimizer, scheduler):
        if mode not in ("faithful", "improved"):
            raise ValueError(f"mode must be 'faithful' or 'improved', got {mode!r}")
        super().__init__(n_mfcc, n_mfcc, hidden, dropout, ae_epochs, mode == "faithful", recon_weight,
                         num_classes, class_names, label_smoothing, optimizer, scheduler)
        self.mode = mode
        self.ae = PairAutoencoder(n_mfcc, ae_hidden, normalize_codes=mode == "improved", gated=mode == "improved")

    def pretrain_loss(self, x, lengths):
        if self.mode == "faithful":
            return frame_pair_loss(self.ae, x, lengths)
        return self.represent(x, lengths, with_recon=True)[1][lengths > 1].mean()


class SequentialAE(_PairAEClassifier):
    """Method B: left-to-right recursion ``code = enc([code, next frame])``; the final code represents."""

    def __init__(self, mode: Mode = "faithful", n_mfcc: int = 13, ae_hidden: int = 64, hidden: int = 128,
                 dropout: float = 0.1, ae_epochs: int = 10, recon_weight: float = 1.0, num_classes: int = 10,
                 class_names: Sequence[str] | None = None, label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(mode, n_mfcc, ae_hidden, hidden, dropout, ae_epochs, recon_weight, num_classes,
                         class_names, label_smoothing, optimizer, scheduler)
        self.save_hyperparameters()

    def represent(self, x, lengths, with_recon=False):
        return sequential_encode(self.ae, x, lengths, with_recon)


class GreedyPairAE(_PairAEClassifier):
    """Method C: greedy recursive autoencoder; the root of the merge tree represents the utterance."""

    def __init__(self, mode: Mode = "faithful", n_mfcc: int = 13, ae_hidden: int = 64, hidden: int = 128,
                 dropout: float = 0.1, ae_epochs: int = 10, recon_weight: float = 1.0, num_classes: int = 10,
                 class_names: Sequence[str] | None = None, label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(mode, n_mfcc, ae_hidden, hidden, dropout, ae_epochs, recon_weight, num_classes,
                         class_names, label_smoothing, optimizer, scheduler)
        self.save_hyperparameters()

    def represent(self, x, lengths, with_recon=False):
        res = greedy_merge(self.ae, x, lengths, with_recon, return_order=False)
        return res.codes, res.recon


# --------------------------------------------------------------------------------------------------
# classical baseline
# --------------------------------------------------------------------------------------------------
class MFCCStatsSVM(Classifier):
    """MFCC statistics (mean/std of frames, optionally of frame deltas) -> scikit-learn RBF SVC.

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
    """

    def __init__(self, deltas: bool = True, C: float = 10.0, gamma: str | float = "scale",
                 kernel: str = "rbf", n_mfcc: int = 13, num_classes: int = 10,
                 class_names: Sequence[str] | None = None,
                 class_weight: Literal["balanced"] | None = None) -> None:
        super().__init__(num_classes, class_names)
        self.save_hyperparameters()
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
        check_batch(x, lengths, self.n_mfcc)
        return mfcc_statistics(x.float(), lengths, self.hparams.deltas)

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
        self.log("train/acc", (scores.argmax(-1) == y).float().mean(), batch_size=len(y))

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
        trainer = self._trainer
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
