"""MFCC sequences -> fixed-length codes -> class logits: the nets of the MFCC representation study (issue 3).

Input: an utterance's ``(T, n_mfcc)`` frames, batched as ``(x (B, T_max, n_mfcc) zero-padded, lengths (B,))``;
padding frames never enter a representation. Each net is ``forward(x, lengths) -> logits`` through an MLP
head on its code, ``encode(x, lengths) -> codes``, and, when it has an autoencoder, ``represent(x, lengths,
with_recon=True)`` and ``pretrain_loss(x, lengths)`` for :class:`zoo.tasks.mfcc_repr.StagedClassifier`, which
trains them in stages (autoencoder epochs, then the head). Plain ``nn.Module`` s, usable without Lightning.

* :class:`MeanMFCC`: mean of the real frames.
* :class:`FlatAE` (method A): frames zero-padded/truncated to ``max_frames``, flattened, compressed by a dense
  autoencoder; the code is the representation.
* :class:`RecursivePairAE` with ``merge="sequential"`` (method B): a pair autoencoder compresses
  ``[frame1, frame2]`` into a frame-sized code, then ``[code, frame3]``, ... to the last real frame.
* :class:`RecursivePairAE` with ``merge="greedy"`` (method C): a recursive autoencoder (Socher et al. 2011).
  Per utterance every adjacent pair is scored by the pair autoencoder's reconstruction error, the lowest is
  merged into one vector, its two new neighbour pairs are re-scored, until one vector remains. Ties go to the
  leftmost pair. :func:`greedy_merge` does this for a whole batch at once (one tensor operation per merge
  step); :func:`greedy_merge_reference` is the slow per-utterance version it is tested and benchmarked against.
* :class:`MFCCStats`: mean/std of frames and of frame deltas, the features of the SVM baseline
  (:class:`zoo.tasks.mfcc_repr.MFCCStatsSVM`); no parameters.
* :class:`FrameConvNet`: a 1-D CNN along the frames (MFCCs and the pitch / formant columns), the mean and std
  of its last maps over the real frames, an MLP head: a net that reads what the gender SVM reads.

B and C have two ``mode`` settings:

* ``faithful`` (what the study did): the pair autoencoder is pre-trained on *raw adjacent frame pairs*
  (:meth:`RecursivePairAE.pretrain_loss`), then frozen (the task's ``freeze_encoder``); the recursion feeds it
  its own codes, which it never saw in training, and the head is trained on the frozen final codes.
* ``improved``: (1) codes are layer-normalised (zero mean, unit variance per code) so a code looks like a
  standardised frame to the next step and cannot shrink to a trivially reconstructable zero; (1b) the pair
  encoder is gated (a softmax mix of left, right and a new vector per coefficient, see
  :class:`PairAutoencoder`), so information and gradients survive long recursions; (2) the reconstruction
  loss is taken at every merge *of the actual recursion / greedy tree* (the inputs of each merge, detached,
  are the targets), so the autoencoder is trained on the distribution it is applied to; (3) with the task's
  ``freeze_encoder: false`` the head's cross-entropy is back-propagated through the recursion / tree jointly
  with ``recon_weight`` x that reconstruction loss. In C the tree shape is chosen greedily without gradients;
  the merges along it carry gradients.
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import mlp_head

Mode = Literal["faithful", "improved"]
Merge = Literal["sequential", "greedy"]


# --------------------------------------------------------------------------------------------------
# batch helpers
# --------------------------------------------------------------------------------------------------
#: extra columns per frame that ``--data.pitch_features`` / ``--data.formant_features`` append, by count
VOICE_COLUMNS = {2: "2 pitch columns (--data.pitch_features true)", 3: "3 formant columns (--data.formant_features true)",
                 5: "2 pitch and 3 formant columns (--data.pitch_features, --data.formant_features true)"}


def check_batch(x: torch.Tensor, lengths: torch.Tensor, n_mfcc: int | None = None) -> None:
    """Reject batches that are not ``(B, T, n_mfcc)`` frames with ``1 <= lengths <= T``."""
    if x.dim() != 3:
        raise ValueError(f"expected an MFCC batch of shape (B, T, n_mfcc) (use --data.feature mfcc), "
                         f"got shape {tuple(x.shape)}")
    voice = VOICE_COLUMNS
    if n_mfcc is not None and x.shape[-1] - n_mfcc in voice:
        raise ValueError(f"expected {n_mfcc} MFCC coefficients per frame (the net's n_mfcc), got {x.shape[-1]}: "
                         f"the data has {voice[x.shape[-1] - n_mfcc]}, or another n_mfcc; use a net that reads "
                         f"them (pitch: true / formants: true), turn them off, or match the net's n_mfcc to --data.n_mfcc")
    if n_mfcc is not None and x.shape[-1] != n_mfcc:
        raise ValueError(f"expected {n_mfcc} MFCC coefficients per frame (the net's n_mfcc), got {x.shape[-1]}; "
                         f"make the net's n_mfcc match --data.n_mfcc")
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}")
    if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
        raise ValueError(f"lengths must be in [1, {x.shape[1]}] (frames of the padded batch), "
                         f"got min {int(lengths.min())}, max {int(lengths.max())}")


def check_voice_batch(owner: str, x: torch.Tensor, lengths: torch.Tensor, n_mfcc: int, pitch: bool,
                      formants: bool) -> int:
    """:func:`check_batch` for frames of ``n_mfcc`` MFCCs followed by the 2 pitch and/or 3 formant columns that
    ``owner`` reads; a batch of another width is named with the columns it should have. Returns the width."""
    width = n_mfcc + 2 * pitch + 3 * formants
    if (pitch or formants) and x.dim() == 3 and x.shape[-1] != width:
        extra = " + ".join(f"{n} {kind}" for n, kind in ((2 * pitch, "pitch"), (3 * formants, "formant")) if n)
        raise ValueError(f"{owner} expects {width} numbers per frame, got {x.shape[-1]}: {n_mfcc} MFCCs + {extra} "
                         f"columns; train with the matching --data.n_mfcc, --data.pitch_features and "
                         f"--data.formant_features")
    check_batch(x, lengths, width)
    return width


def frame_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """``(B, T)`` boolean mask of real (non-padding) frames."""
    return torch.arange(T, device=lengths.device)[None] < lengths[:, None]


def masked_mean_std(x: torch.Tensor, lengths: torch.Tensor, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) standard deviation over the real frames of each utterance; a net that trains
    through the std needs ``eps`` > 0 (the gradient of sqrt at a constant feature's 0 is infinite)."""
    m = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    n = lengths.to(x.dtype).clamp(min=1).unsqueeze(-1)
    mean = (x * m).sum(1) / n
    var = (((x - mean[:, None]) * m) ** 2).sum(1) / n
    return mean, (var.clamp(min=0) + eps).sqrt()


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
# the nets: a representation, then an MLP head on it
# --------------------------------------------------------------------------------------------------
class MFCCCodeNet(nn.Module):
    """Base of the representation nets: :meth:`represent` gives a fixed-length code, ``head`` classifies it.

    The head is built first, before any autoencoder, as the pre-split LightningModules did, so a seeded run
    draws the same initial weights.
    """

    def __init__(self, n_mfcc: int, code_dim: int, hidden: int, dropout: float, num_classes: int) -> None:
        super().__init__()
        if min(n_mfcc, code_dim) < 1 or num_classes < 2:
            raise ValueError(f"{type(self).__name__}: n_mfcc and code_dim must be >= 1 and num_classes >= 2, got "
                             f"n_mfcc={n_mfcc}, code_dim={code_dim}, num_classes={num_classes}")
        if not 0 <= dropout < 1:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}")
        self.n_mfcc, self.code_dim, self.num_classes = n_mfcc, code_dim, num_classes
        self.head = mlp_head(code_dim, num_classes, hidden, layers=2, dropout=dropout)

    def represent(self, x: torch.Tensor, lengths: torch.Tensor,
                  with_recon: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(codes (B, code_dim), per-utterance reconstruction error (B,) or None)``; no input checks."""
        raise NotImplementedError  # pragma: no cover

    def pretrain_loss(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss of the autoencoder-only epochs."""
        raise NotImplementedError(f"{type(self).__name__} has no autoencoder to pre-train: set ae_epochs to 0")

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The representation ``(B, code_dim)`` of each utterance."""
        check_batch(x, lengths, self.n_mfcc)
        return self.represent(x, lengths)[0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x, lengths))


class MeanMFCC(MFCCCodeNet):
    """Baseline: the mean of the utterance's real frames (padding excluded) -> MLP head.

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc (it is also the code size).
        hidden: width of the two hidden layers of the MLP head; <= 0: a single linear layer.
        dropout: dropout probability after each hidden layer of the head (unused when hidden <= 0).
        num_classes: number of target classes (>= 2; must match the data, e.g. 10 digits or 2 genders).
    """

    def __init__(self, n_mfcc: int = 13, hidden: int = 128, dropout: float = 0.1, num_classes: int = 10) -> None:
        super().__init__(n_mfcc, n_mfcc, hidden, dropout, num_classes)

    def represent(self, x, lengths, with_recon=False):
        return masked_mean_std(x, lengths)[0], None


class FlatAE(MFCCCodeNet):
    """Method A: ``max_frames`` frames (zero-padded, longer utterances cut) flattened -> dense autoencoder.

    Cutting is reported once per net with the fraction of utterances it affected, never silently.

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc.
        max_frames: frames kept per utterance: shorter ones are zero-padded, longer ones cut (with a warning).
        code_dim: size of the autoencoder's code, the fixed-length representation fed to the head.
        ae_hidden: widths of the encoder's hidden layers (mirrored in the decoder).
        hidden: width of the two hidden layers of the MLP head; <= 0: a single linear layer.
        dropout: dropout probability after each hidden layer of the head (unused when hidden <= 0).
        num_classes: number of target classes (>= 2; must match the data, e.g. 10 digits or 2 genders).
    """

    def __init__(self, n_mfcc: int = 13, max_frames: int = 100, code_dim: int = 64,
                 ae_hidden: Sequence[int] = (512, 256), hidden: int = 128, dropout: float = 0.1,
                 num_classes: int = 10) -> None:
        super().__init__(n_mfcc, code_dim, hidden, dropout, num_classes)
        if max_frames < 1 or any(h < 1 for h in ae_hidden):
            raise ValueError(f"FlatAE: max_frames and every ae_hidden width must be >= 1, got max_frames={max_frames}, "
                             f"ae_hidden={list(ae_hidden)}")
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
            warnings.warn(f"FlatAE: utterances longer than max_frames={self.max_frames} are cut ({frac:.1%} of the "
                          "first such batch); raise the net's max_frames to keep them whole", stacklevel=3)
            self._warned_cut = True
        return pad_or_truncate(x, lengths, self.max_frames).flatten(1)

    def represent(self, x, lengths, with_recon=False):
        flat = self._flat(x, lengths)
        code = self.encoder(flat)
        recon = ((self.decoder(code) - flat) ** 2).mean(-1) if with_recon else None
        return code, recon

    def pretrain_loss(self, x, lengths):
        return self.represent(x, lengths, with_recon=True)[1].mean()


class RecursivePairAE(MFCCCodeNet):
    """Methods B and C: a :class:`PairAutoencoder` applied recursively; the final vector represents.

    Args:
        merge: "sequential" (B): left to right, ``code = enc([code, next frame])``; "greedy" (C): the adjacent
            pair with the lowest reconstruction error first, until one vector is left.
        mode: "faithful": plain pair AE, pre-trained on raw frame pairs; "improved": normalised, gated codes,
            pre-trained (and jointly trained) along the recursion itself (module docstring).
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc (it is also the code size).
        ae_hidden: width of the pair autoencoder's hidden layer (encoder and decoder).
        hidden: width of the two hidden layers of the MLP head; <= 0: a single linear layer.
        dropout: dropout probability after each hidden layer of the head (unused when hidden <= 0).
        num_classes: number of target classes (>= 2; must match the data, e.g. 10 digits or 2 genders).
    """

    def __init__(self, merge: Merge = "greedy", mode: Mode = "faithful", n_mfcc: int = 13, ae_hidden: int = 64,
                 hidden: int = 128, dropout: float = 0.1, num_classes: int = 10) -> None:
        super().__init__(n_mfcc, n_mfcc, hidden, dropout, num_classes)
        self.merge, self.mode = merge, mode
        improved = mode == "improved"
        self.ae = PairAutoencoder(n_mfcc, ae_hidden, normalize_codes=improved, gated=improved)

    def represent(self, x, lengths, with_recon=False):
        if self.merge == "sequential":
            return sequential_encode(self.ae, x, lengths, with_recon)
        res = greedy_merge(self.ae, x, lengths, with_recon, return_order=False)
        return res.codes, res.recon

    def pretrain_loss(self, x, lengths):
        if self.mode == "faithful":
            return frame_pair_loss(self.ae, x, lengths)
        return self.represent(x, lengths, with_recon=True)[1][lengths > 1].mean()


class MFCCStats(nn.Module):
    """The classical fixed-length summary (no parameters): mean/std of the real frames and, with ``deltas``,
    of the frame-to-frame differences: ``(B, T, n_mfcc) -> (B, 2 n_mfcc)`` or ``(B, 4 n_mfcc)``.

    With ``pitch`` the frames carry two more columns (``--data.pitch_features true``: log2 F0 and a voiced
    flag, :func:`datamodules.audio.pitch_columns`) and three numbers are appended: the mean and std of the
    log pitch and the voiced share. With ``formants`` three more columns follow those
    (``--data.formant_features true``: log2 F1-F3, :func:`datamodules.audio.formant_columns`) and their three
    means are appended. ``mfcc=False`` keeps only the voice's numbers.

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc.
        deltas: also the mean/std of frame-to-frame differences (doubles the feature size).
        pitch: the frames carry the two pitch columns after the MFCCs; summarise them too.
        mfcc: summarise the MFCC columns (False needs ``pitch`` or ``formants``).
        formants: the frames end with the three formant columns; summarise them too.
    """

    def __init__(self, n_mfcc: int = 13, deltas: bool = True, pitch: bool = False, mfcc: bool = True,
                 formants: bool = False) -> None:
        super().__init__()
        if not (mfcc or pitch or formants):
            raise ValueError("MFCCStats: mfcc=False without pitch or formants would summarise nothing; keep one")
        self.n_mfcc, self.deltas, self.pitch, self.mfcc, self.formants = n_mfcc, deltas, pitch, mfcc, formants
        self.out_dim = (n_mfcc * (4 if deltas else 2) if mfcc else 0) + 3 * pitch + 3 * formants

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        width = check_voice_batch(f"MFCCStats(pitch={self.pitch}, formants={self.formants})", x, lengths,
                                  self.n_mfcc, self.pitch, self.formants)
        x = x.float()
        parts = [mfcc_statistics(x[..., : self.n_mfcc], lengths, self.deltas)] if self.mfcc else []
        mean, std = masked_mean_std(x[..., self.n_mfcc:], lengths) if width > self.n_mfcc else (None, None)
        if self.pitch:
            parts.append(torch.stack([mean[:, 0], std[:, 0], mean[:, 1]], 1))
        if self.formants:
            parts.append(mean[:, 2 * self.pitch:])
        return torch.cat(parts, 1)


class FrameConvNet(nn.Module):
    """A 1-D CNN along an utterance's frames -> mean and std of its last maps over the real frames -> MLP head.

    Why: the log-mel :class:`zoo.nets.convnet.ConvNet` sees a voice's pitch only as a ripple of harmonics in 64
    mel bands; this net reads the tracked pitch and formants of every frame (``--data.pitch_features`` /
    ``--data.formant_features``), the cues of the gender SVM, and learns from how they move across the word as
    well as their levels. Statistics pooling (the mean and std over time, as x-vectors do) makes the code
    independent of the clip's length.

    Each block is Conv1d, LayerNorm over the channels of each frame, ReLU; padding frames are zeroed after every
    block, so a clip gets the same output alone or zero-padded in a batch (no batch or padding statistics).

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc.
        pitch: the frames carry the two pitch columns after the MFCCs (``--data.pitch_features true``).
        formants: the frames end with the three formant columns (``--data.formant_features true``).
        mfcc: read the MFCC columns; False: the pitch / formant columns only (they describe the voice, the
            MFCCs also the word, the speaker's timbre and the room).
        channels: output channels of each conv block.
        kernel_size: frames each convolution sees (odd).
        hidden: width of the two hidden layers of the MLP head; <= 0: a single linear layer.
        dropout: dropout probability after each hidden layer of the head.
        num_classes: number of target classes (>= 2).
    """

    def __init__(self, n_mfcc: int = 13, pitch: bool = False, formants: bool = False, mfcc: bool = True,
                 channels: Sequence[int] = (64, 128, 128), kernel_size: int = 5, hidden: int = 128,
                 dropout: float = 0.2, num_classes: int = 10) -> None:
        super().__init__()
        if not (mfcc or pitch or formants):
            raise ValueError("FrameConvNet: mfcc=False without pitch or formants would read no column; keep one")
        if n_mfcc < 1 or not channels or min(channels) < 1 or kernel_size < 1 or kernel_size % 2 == 0 \
                or num_classes < 2:
            raise ValueError(f"FrameConvNet: needs n_mfcc >= 1, channels >= 1 (at least one block), an odd kernel_size "
                             f">= 1 and num_classes >= 2, got n_mfcc={n_mfcc}, channels={list(channels)}, "
                             f"kernel_size={kernel_size}, num_classes={num_classes}")
        if not 0 <= dropout < 1:
            raise ValueError(f"FrameConvNet: dropout must be in [0, 1), got {dropout}")
        self.n_mfcc, self.pitch, self.formants, self.mfcc = n_mfcc, pitch, formants, mfcc
        self.num_classes = num_classes
        sizes = [(n_mfcc if mfcc else 0) + 2 * pitch + 3 * formants, *channels]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2)
                                   for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in sizes[1:])
        self.head = mlp_head(2 * sizes[-1], num_classes, hidden, layers=2, dropout=dropout)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, 2 * channels[-1])``: the mean and std over the real frames of the last block's maps."""
        check_voice_batch(f"FrameConvNet(n_mfcc={self.n_mfcc}, pitch={self.pitch}, formants={self.formants})", x,
                          lengths, self.n_mfcc, self.pitch, self.formants)
        keep = frame_mask(lengths, x.shape[1]).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = x if self.mfcc else x[..., self.n_mfcc:]
        h = h.transpose(1, 2) * keep
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h).transpose(1, 2)).transpose(1, 2)) * keep
        return torch.cat(masked_mean_std(h.transpose(1, 2).float(), lengths, eps=1e-5), 1)  # sums in float32

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x, lengths))
