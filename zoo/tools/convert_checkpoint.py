"""Convert a checkpoint written before the nets/tasks split into today's layout.

``python -m zoo.tools.convert_checkpoint --src OLD.ckpt --dst NEW.ckpt``

Since zoo 0.2 a network is a plain ``nn.Module`` (:mod:`zoo.nets`) held by a task LightningModule
(:mod:`zoo.tasks`) as ``net``: the checkpoint names the task as its class, the net as a nested
``class_path``, and the net's weights sit under ``net.``. Older checkpoints (``zoo.audio_cnn.CNN``,
``zoo.mnist_classifiers.LeNet5``, ``zoo.dcgan.DCGAN``, ...) are rewritten by the family rules in
:mod:`zoo.tools.convert`; loading is weights-only, and the result is loaded back and checked (every
weight accounted for) before it is written. Everything else in the checkpoint (optimizer state,
loops, callbacks, DataModule settings) is kept, so a converted ``last.ckpt`` also resumes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.checkpoints import LEGACY_CLASSES
from zoo.safe_load import load_checkpoint
from zoo.tools.convert import all_rules


def is_legacy(ckpt: dict) -> str | None:
    """The old class path when ``ckpt`` was written before the split, else None."""
    hp = ckpt.get("hyper_parameters")
    class_path = hp.get("_class_path") if isinstance(hp, dict) else None
    return class_path if class_path in LEGACY_CLASSES else None


def convert(ckpt: dict, path: str | Path = "checkpoint") -> dict:
    """The converted checkpoint dict (``ckpt`` is left as it is)."""
    old = is_legacy(ckpt)
    if old is None:
        hp = ckpt.get("hyper_parameters") or {}
        raise ValueError(f"{path} is not a checkpoint of an old zoo class (its class is "
                         f"{hp.get('_class_path') if isinstance(hp, dict) else None!r}); known old classes: "
                         f"{', '.join(sorted(all_rules()))}")
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k not in ("_class_path", "_instantiator")}
    new_hparams, state_dict = all_rules()[old](hparams, dict(ckpt["state_dict"]))
    new_hparams = {**new_hparams, "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    return {**ckpt, "hyper_parameters": new_hparams, "state_dict": state_dict}


def convert_checkpoint(*, src: str, dst: str) -> Path:
    """Rewrite ``src`` (an old zoo checkpoint) as ``dst`` in today's layout, and check that it loads.

    Args:
        src: checkpoint written by zoo < 0.2 (``python -m zoo fit`` of that version).
        dst: where to write the converted checkpoint (parent folders are created; never ``src`` itself).
    """
    from zoo.checkpoints import load_cli_checkpoint

    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"dst must differ from src ({src}): the original is kept")
    new = convert(load_checkpoint(src), src)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(new, out)
    try:
        model, _ = load_cli_checkpoint(out, what="converted checkpoint")  # strict: every weight has its place
    except Exception:
        out.unlink()
        raise
    nets = [f"{name}={type(child).__name__}" for name, child in model.named_children()
            if type(child).__module__.startswith("zoo.nets")]
    print(f"converted {src} ({ckpt_class(src)}) -> {out} ({type(model).__name__}({', '.join(nets)}))")
    return out


def ckpt_class(path: str | Path) -> str:
    return load_checkpoint(path)["hyper_parameters"]["_class_path"]


def main(args: list[str] | None = None):
    from jsonargparse import auto_cli

    return auto_cli(convert_checkpoint, args=args)


if __name__ == "__main__":
    main()
