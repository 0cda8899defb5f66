"""The example scripts: crammed MLM pretraining, GLUE fine-tuning, the shipped checkpoint and the quickstart (CPU)."""

import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GLUE = SHARED / "data" / "glue"
SST2 = GLUE / "SST-2"
CHECKPOINT = REPO / "checkpoints" / "ultrafastbert-sst2-small"

needs_sst2 = pytest.mark.skipif(
    not (SST2 / "train.tsv").is_file() or not (SST2 / "dev.tsv").is_file(),
    reason=f"SST-2 data not found at {SST2} (CI clones the repo with shared/ beside it)",
)


from conftest import load_example as load_script  # noqa: E402


run_glue = load_script("run_glue")
pretrain_mlm = load_script("pretrain_mlm")


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    """A tiny UltraFastBERT + WordPiece tokenizer pretrained for a few steps on SST-2 sentences."""
    if not (SST2 / "train.tsv").is_file():
        pytest.skip(f"SST-2 data not found at {SST2}")
    out = tmp_path_factory.mktemp("mlm") / "tiny-mlm"
    results = pretrain_mlm.main([
        "--output-dir", str(out), "--sst2-train", str(SST2 / "train.tsv"), "--max-lines", "800",
        "--vocab-size", "400", "--hidden-size", "32", "--layers", "1", "--heads", "2", "--fff-depth", "3",
        "--seq-length", "32", "--batch-size", "16", "--max-steps", "40", "--lr", "5e-3", "--eval-fraction", "0.1",
        "--logging-steps", "5", "--seed", "0",
    ])
    return out, results


@needs_sst2
def test_pretrain_mlm_lowers_the_loss_and_saves_a_checkpoint(tiny_mlm):
    out, results = tiny_mlm
    assert results["global_steps"] == 40
    # held-out loss with the same masks before and after, and the logged training loss, both go down
    assert results["eval_mlm_loss_after"] < results["eval_mlm_loss_before"] - 0.2, results
    assert results["last_logged_train_loss"] < results["first_logged_train_loss"], results
    assert math.isclose(results["eval_mlm_loss_before"], math.log(400), rel_tol=0.15)  # starts near uniform
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "ultrafastbert" and config["hidden_dropout_prob"] == 0.0  # crammed: no dropout
    assert (out / "modeling_ultrafastbert.py").exists() and (out / "tokenizer.json").exists()


def test_one_cycle_schedule_is_triangular():
    values = [pretrain_mlm.one_cycle(p, 0.5) for p in (0.0, 0.25, 0.5, 0.75, 1.0, 1.2)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    assert pretrain_mlm.one_cycle(0.1, 0.2) == pytest.approx(0.5)


def test_dense_twin_config_has_the_same_neurons_and_parameters():
    from transformers import BertTokenizerFast

    from modeling_ultrafastbert import UltraFastBertForMaskedLM

    tokenizer = pretrain_mlm.train_tokenizer(["a small corpus of words", "and some more words here"] * 5, 60, 32)
    argv = ["--output-dir", "x", "--max-steps", "1", "--hidden-size", "16", "--layers", "1", "--heads", "2",
            "--fff-depth", "3", "--fff-trees", "2"]
    fff = pretrain_mlm.build_config(pretrain_mlm.parse_args(argv), tokenizer)
    dense = pretrain_mlm.build_config(pretrain_mlm.parse_args(argv + ["--dense-ff-twin"]), tokenizer)
    assert isinstance(tokenizer, BertTokenizerFast)
    assert (dense.fff_depth, dense.fff_trees) == (0, 2 * 15)
    count = lambda c: sum(p.numel() for p in UltraFastBertForMaskedLM(c).parameters())  # noqa: E731
    assert count(fff) == count(dense)


@needs_sst2
def test_run_glue_sst2_from_an_mlm_checkpoint(tiny_mlm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    mlm, _ = tiny_mlm
    out = tmp_path / "sst2"
    results = run_glue.main([
        "--task", "sst2", "--model", str(mlm), "--data-dir", str(GLUE), "--output-dir", str(out),
        "--max-steps", "6", "--batch-size", "16", "--max-length", "32", "--lr", "1e-3",
        "--max-train-samples", "160", "--max-eval-samples", "64", "--logging-steps", "2",
    ])
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["accuracy"] == pytest.approx(results["accuracy"])
    assert 0.0 <= saved["accuracy"] <= 1.0 and math.isfinite(saved["loss"])
    assert saved["eval_examples"] == 64 and saved["global_steps"] == 6
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert model.config.num_labels == 2 and model.config.id2label[1] == "positive"
    assert (out / "README.md").exists() and (out / "tokenizer.json").exists()


def _write_stsb(folder: Path, sentences: list[str], rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lines = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    for i in range(rows):
        a, b = rng.choice(len(sentences), 2)
        score = 5.0 if a == b else float(rng.uniform(0, 5))
        lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{sentences[a]}\t{sentences[b]}\t{score:.3f}")
    (folder / ("train.tsv" if seed == 0 else "dev.tsv")).write_text("\n".join(lines) + "\n")


@needs_sst2
def test_run_glue_stsb_layout_is_a_regression(tiny_mlm, tmp_path):
    mlm, _ = tiny_mlm
    sentences = [line.split("\t")[0] for line in (SST2 / "dev.tsv").read_text().splitlines()[1:200]]
    task_dir = tmp_path / "glue" / "STS-B"
    task_dir.mkdir(parents=True)
    _write_stsb(task_dir, sentences, 96, seed=0)
    _write_stsb(task_dir, sentences, 40, seed=1)
    out = tmp_path / "stsb"
    results = run_glue.main([
        "--task", "stsb", "--model", str(mlm), "--data-dir", str(tmp_path / "glue"), "--output-dir", str(out),
        "--max-steps", "4", "--batch-size", "16", "--max-length", "32", "--no-save",
    ])
    saved = json.loads((out / "eval_results.json").read_text())
    for key in ("pearson", "spearmanr", "combined_score", "loss"):
        assert math.isfinite(saved[key]) and saved[key] == pytest.approx(results[key])
    assert -1.0 <= saved["pearson"] <= 1.0 and -1.0 <= saved["spearmanr"] <= 1.0
    assert saved["eval_examples"] == 40 and not (out / "model.safetensors").exists()


def test_metrics_match_reference_implementations():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 50).astype(float)  # ties on purpose
    y = x + rng.normal(size=50)
    assert run_glue.pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0])
    assert run_glue.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    pred, gold = np.array([1, 1, 0, 0, 1, 0, 1, 1]), np.array([1, 0, 0, 0, 1, 1, 1, 0])
    tp, tn, fp, fn = 3, 2, 2, 1
    assert run_glue.matthews_correlation(pred, gold) == pytest.approx(
        (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert run_glue.f1_binary(pred, gold) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert run_glue.accuracy(pred, gold) == pytest.approx(5 / 8)


def test_glue_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="MRPC"):
        run_glue.main(["--task", "mrpc", "--model", "unused", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (mrpc / "train.tsv").write_text(header + "1\t1\t2\ta\tb\n0\t3\t4\tonly three columns\n")
    (mrpc / "dev.tsv").write_text(header + "1\t1\t2\ta\tb\n")
    with pytest.raises(run_glue.GlueDataError, match=re.escape(f"{mrpc / 'train.tsv'}:3")):
        run_glue.main(["--task", "mrpc", "--model", "unused", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    (mrpc / "train.tsv").write_text(header + "yes\t1\t2\ta\tb\n")
    with pytest.raises(run_glue.GlueDataError, match=r"train.tsv:2: .*label 'yes'"):
        run_glue.main(["--task", "mrpc", "--model", "unused", "--data-dir", str(mrpc), "--output-dir", str(tmp_path / "o")])


def test_glue_layouts_read_the_right_columns(tmp_path):
    (tmp_path / "cola.tsv").write_text("gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n")
    cola = run_glue.read_glue_tsv(tmp_path / "cola.tsv", run_glue.TASKS["cola"])
    assert cola == {"text_a": ["The sailors rode the breeze clear of the rocks."], "label": [1]}
    mnli_header = "\t".join(["index", "promptID", "pairID", "genre", "s1bp", "s2bp", "s1p", "s2p", "sentence1",
                             "sentence2", "label1", "label2", "label3", "label4", "label5", "gold_label"])
    row = "\t".join(["0", "1", "2", "gov", "x", "x", "x", "x", "premise", "hypothesis", "neutral", "neutral",
                     "neutral", "neutral", "neutral", "neutral"])
    (tmp_path / "mnli.tsv").write_text(mnli_header + "\n" + row + "\n")
    mnli = run_glue.read_glue_tsv(tmp_path / "mnli.tsv", run_glue.TASKS["mnli"])
    assert mnli == {"text_a": ["premise"], "text_b": ["hypothesis"], "label": [2]}
    (tmp_path / "rte.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tA \"quoted\" one.\tB.\tnot_entailment\n")
    rte = run_glue.read_glue_tsv(tmp_path / "rte.tsv", run_glue.TASKS["rte"])
    assert rte == {"text_a": ['A "quoted" one.'], "text_b": ["B."], "label": [1]}


def _card_accuracy() -> float:
    card = (CHECKPOINT / "README.md").read_text()
    match = re.search(r"- type: accuracy\s+value: ([0-9.]+)", card)
    assert match, "the model card carries no accuracy in its model-index"
    return float(match.group(1))


@needs_sst2
def test_shipped_checkpoint_reaches_its_card_accuracy(tmp_path):
    card_accuracy = _card_accuracy()
    shipped = json.loads((CHECKPOINT / "eval_results.json").read_text())
    assert shipped["accuracy"] == pytest.approx(card_accuracy, abs=5e-5)
    results = run_glue.main([
        "--task", "sst2", "--model", str(CHECKPOINT), "--data-dir", str(GLUE), "--output-dir", str(tmp_path / "eval"),
        "--eval-only",
    ])
    assert results["eval_examples"] == 872 and results["fff_inference"] == "conditional"
    assert abs(results["accuracy"] - card_accuracy) <= 0.005, (results["accuracy"], card_accuracy)
    assert results["accuracy"] > 0.75  # a real sentiment classifier, far above the 51% majority class


def test_quickstart_runs_offline():
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    import os

    env.update({k: v for k, v in os.environ.items() if k not in env})
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py"), "--repeats", "1", "a dull, lifeless film"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.strip().startswith("positive") and "gripping" in line for line in lines), done.stdout
    assert any(line.strip().startswith("negative") and "a dull, lifeless film" in line for line in lines), done.stdout
    assert "conditional:" in done.stdout and "dense:" in done.stdout and "same predictions: True" in done.stdout


def test_push_without_a_token_fails_clearly(tmp_path, monkeypatch):
    pytest.importorskip("conversion.push_to_hub", reason="conversion/push_to_hub.py (the Hub issue) is not present")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="could not push .*token"):
        run_glue.push(CHECKPOINT, "someone/ultrafastbert-sst2-small")


EXIT_CHECKPOINT = REPO / "checkpoints" / "ultrafastbert-sst2-exit8"


@needs_sst2
def test_early_exit_sweep_on_the_shipped_exit_checkpoint(tmp_path):
    """The deeper demo checkpoint: its shipped threshold reproduces the card's accuracy and skips most layers; the
    sweep checks that batch 1 and batch 32 give every sentence the same prediction and exit layer."""
    sweep = load_script("early_exit_sweep")
    config = json.loads((EXIT_CHECKPOINT / "config.json").read_text())
    assert config["num_hidden_layers"] >= 8 and config["exit_ramps"] and config["exit_predictor"] is not None
    shipped = config["early_exit_entropy"]
    rows = sweep.main([str(EXIT_CHECKPOINT), "--dev", str(SST2 / "dev.tsv"), "--output-dir", str(tmp_path),
                       "--thresholds", f"none,{shipped},100", "--repeats", "1"])
    by_threshold = {r["threshold"]: r for r in rows}
    full, exiting, everyone_at_one = by_threshold[None], by_threshold[shipped], by_threshold[100.0]
    assert full["mean_exit_layer"] == config["num_hidden_layers"]
    assert everyone_at_one["mean_exit_layer"] == 1.0
    card = (EXIT_CHECKPOINT / "README.md").read_text()
    card_accuracy = float(re.search(r"- type: accuracy\s+value: ([0-9.]+)", card).group(1))
    assert exiting["accuracy"] == pytest.approx(card_accuracy, abs=5e-4)
    assert full["accuracy"] - exiting["accuracy"] <= 0.01  # the bound: at most 1 point lost
    assert exiting["mean_exit_layer"] <= 0.5 * config["num_hidden_layers"]  # and at least half the layers saved
    for name in ("early_exit_sweep.json", "early_exit_sweep.md", "early_exit_sweep.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_early_exit_sweep_refuses_a_model_without_ramps(tmp_path):
    sweep = load_script("early_exit_sweep")
    with pytest.raises(SystemExit, match="no off-ramps"):
        sweep.main([str(CHECKPOINT), "--dev", str(SST2 / "dev.tsv"), "--output-dir", str(tmp_path), "--repeats", "1",
                    "--max-examples", "4"])
    with pytest.raises(SystemExit, match="thresholds must be"):
        sweep.parse_thresholds("none,-1")
