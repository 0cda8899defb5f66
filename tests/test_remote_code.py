"""save_pretrained writes a self-contained remote-code checkpoint that loads without this package installed."""

import json
import warnings

import pytest
import torch
from conftest import run_in_clean_env, tiny_config
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from modeling_ultrafastbert import UltraFastBertForMaskedLM, UltraFastBertForSequenceClassification, UltraFastBertModel
from modeling_ultrafastbert.modeling_ultrafastbert import AUTO_MAP

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")


def test_auto_classes_are_registered_by_import(tmp_path):
    config = tiny_config(num_labels=3)
    UltraFastBertForSequenceClassification(config).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), type(config))
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path)) is UltraFastBertForSequenceClassification
    assert type(AutoModel.from_pretrained(tmp_path)) is UltraFastBertModel
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path)) is UltraFastBertForMaskedLM


def test_saved_folder_names_every_auto_class_and_carries_the_code(tmp_path):
    UltraFastBertForSequenceClassification(tiny_config()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "ultrafastbert"
    assert saved["auto_map"] == AUTO_MAP
    for name in ("configuration_ultrafastbert.py", "modeling_ultrafastbert.py", "fast_feedforward.py"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))


def test_remote_code_round_trip_in_a_clean_environment(tmp_path):
    config = tiny_config(num_labels=2)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    UltraFastBertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    ids = torch.randint(1, config.vocab_size, (2, 11))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
    torch.save({"ids": ids, "mask": mask, "expected": expected}, tmp_path / "io.pt")

    output = run_in_clean_env(
        f"""
        import warnings, torch
        warnings.simplefilter("ignore")
        from transformers import (AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
            AutoModelForSequenceClassification, AutoModelForTokenClassification)
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(io["ids"], attention_mask=io["mask"]).logits
            torch.testing.assert_close(logits, io["expected"], rtol=1e-5, atol=1e-5)
            model.config.fff_inference = "dense"
            torch.testing.assert_close(model(io["ids"], attention_mask=io["mask"]).logits, io["expected"],
                                       rtol=1e-5, atol=1e-5)
        for auto in (AutoModel, AutoModelForTokenClassification, AutoModelForQuestionAnswering):
            other = auto.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
            print(type(other).__name__)
        mlm = AutoModelForMaskedLM.from_pretrained({str(tmp_path / 'mlm')!r}, trust_remote_code=True)
        assert mlm.decoder.weight is mlm.ultrafastbert.embeddings.word_embeddings.weight, "decoder untied"
        print(type(mlm).__name__, "tied")
        """,
        tmp_path,
    )
    assert "UltraFastBertModel" in output
    assert "UltraFastBertForTokenClassification" in output
    assert "UltraFastBertForQuestionAnswering" in output
    assert "UltraFastBertForMaskedLM tied" in output


@pytest.mark.parametrize("name", ["ultrafastbert-sst2-small", "ultrafastbert-sst2-exit8"])
def test_embedded_checkpoint_carries_the_current_code(name):
    """The shipped checkpoints' remote-code files are the package's (refresh: examples/refresh_checkpoint_code.py)."""
    from conftest import REPO_ROOT

    checkpoint = REPO_ROOT / "checkpoints" / name
    shipped = sorted(path.name for path in checkpoint.glob("*.py"))
    assert shipped, "the embedded checkpoint has no remote-code files"
    for name in shipped:
        assert (checkpoint / name).read_text() == (REPO_ROOT / "modeling_ultrafastbert" / name).read_text(), (
            f"{name} in the checkpoint is stale: run python examples/refresh_checkpoint_code.py {checkpoint} --card"
        )
    assert {"modeling_ultrafastbert.py", "fast_feedforward.py", "fff_cpu_kernel.py"} <= set(shipped)
