# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Push a checkpoint of ours (converted, pretrained or fine-tuned) with its remote code, tokenizer and card to the Hub.

Usage:
    python conversion/push_to_hub.py CHECKPOINT_DIR REPO_ID [--private] [--revision BRANCH] [--commit-message M]

As a library (e.g. from the training examples):
    from conversion.push_to_hub import push_checkpoint
    push_checkpoint("out/sst2", "me/ultrafastbert-1x11-sst2")

The token comes from `token=`, the HF_TOKEN environment variable or the stored `huggingface-cli login`. The Hub
endpoint is huggingface_hub's (HF_ENDPOINT overrides it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REMOTE_CODE_FILES = ("configuration_ultrafastbert.py", "modeling_ultrafastbert.py", "fast_feedforward.py")
# never uploaded: local bookkeeping of trainers and editors
IGNORE_PATTERNS = ["*.tmp", ".*", "__pycache__/*", "*.pyc", "optimizer.pt", "scheduler.pt", "rng_state*.pth",
                   "training_args.bin", "trainer_state.json", "checkpoint-*/*"]


class PushError(RuntimeError):
    """The checkpoint cannot be pushed (no token, not a checkpoint of ours, ...)."""


def check_checkpoint(checkpoint_dir: str | os.PathLike) -> dict:
    """Check that the folder is a complete UltraFastBERT checkpoint of ours; return its config dict."""
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise PushError(f"{path} is not a folder")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise PushError(f"{path} has no config.json: not a saved checkpoint")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise PushError(f"{config_path} is not valid JSON: {err}") from err
    problems = []
    if config.get("model_type") != "ultrafastbert":
        problems.append(f"config model_type is {config.get('model_type')!r}, not 'ultrafastbert' "
                        "(convert original checkpoints with conversion/convert_original_checkpoint.py first)")
    auto_map = config.get("auto_map") or {}
    for key in ("AutoConfig", "AutoModel"):
        if key not in auto_map:
            problems.append(f"config auto_map lacks {key} (save the model with save_pretrained of our classes)")
    missing_code = [name for name in REMOTE_CODE_FILES if not (path / name).is_file()]
    if missing_code:
        problems.append(f"remote-code files missing: {', '.join(missing_code)}")
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        problems.append("no model.safetensors (or sharded index): weights must be saved as safetensors")
    if problems:
        raise PushError(f"{path} is not a pushable UltraFastBERT checkpoint:\n  " + "\n  ".join(problems))
    return config


def resolve_token(token: str | None = None) -> str:
    """The token to use: the argument, else HF_TOKEN / the stored login. Raises PushError when there is none."""
    if token:
        return token
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: set the HF_TOKEN environment variable or run `hf auth login` "
            "(huggingface-cli login) before pushing"
        )
    return token


def push_checkpoint(
    checkpoint_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload CHECKPOINT_DIR to the model repo REPO_ID (created if needed); return the commit URL."""
    check_checkpoint(checkpoint_dir)
    if not isinstance(repo_id, str) or not repo_id or repo_id.count("/") > 1 or repo_id.startswith("/"):
        raise PushError(f"invalid repo id {repo_id!r}: expected 'name' or 'owner/name'")
    token = resolve_token(token)  # before any network call

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(checkpoint_dir),
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload UltraFastBERT checkpoint {Path(checkpoint_dir).name}",
        ignore_patterns=IGNORE_PATTERNS,
    )
    return getattr(commit, "commit_url", None) or str(commit)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Push an UltraFastBERT checkpoint folder (config with auto_map, "
                                     "safetensors, remote code, tokenizer, README.md) to the Hugging Face Hub.")
    parser.add_argument("checkpoint_dir")
    parser.add_argument("repo_id", help="'owner/name' (or 'name' for your own namespace)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="push to this branch (created from main if needed)")
    parser.add_argument("--commit-message")
    args = parser.parse_args(argv)
    try:
        url = push_checkpoint(args.checkpoint_dir, args.repo_id, private=args.private, revision=args.revision,
                              commit_message=args.commit_message)
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"pushed {args.checkpoint_dir} -> {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
