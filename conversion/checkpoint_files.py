# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""What the conversion scripts share: which class a saved checkpoint is, and replacing an output folder only once
the new one is complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import modeling_ultrafastbert

# files of a checkpoint that are not weights/config/code and travel unchanged (tokenizer, card)
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "README.md")


def model_class_for(config):
    """The package's model class named by the config's `architectures` (the base model if none is named)."""
    name = (getattr(config, "architectures", None) or ["UltraFastBertModel"])[0]
    model_class = getattr(modeling_ultrafastbert, name, None)
    if model_class is None:
        raise ValueError(f"the checkpoint's architecture {name!r} is not an UltraFastBERT model class")
    return model_class


def copy_side_files(src: Path, dst: Path, names=COPIED_FILES) -> None:
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def move_into_place(tmp_dir: Path, out: Path) -> None:
    """Put the finished folder `tmp_dir` at `out`; an existing `out` is removed only after the new one is there."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp_dir, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, out)
