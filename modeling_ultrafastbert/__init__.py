"""UltraFastBERT for transformers: a crammedBERT encoder with fast feedforward (FFF) layers that run conditionally."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_ultrafastbert import UltraFastBertConfig
from .fast_feedforward import FastFeedForward, fff_conditional, fff_conditional_torch, fff_masked, native_kernel_status
from .modeling_ultrafastbert import (
    UltraFastBertForMaskedLM,
    UltraFastBertForQuestionAnswering,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertModel,
    UltraFastBertPreTrainedModel,
)

__version__ = "0.1.0"

# importing the package makes the Auto API know the model (no trust_remote_code needed when it is installed)
AutoConfig.register(UltraFastBertConfig.model_type, UltraFastBertConfig, exist_ok=True)
for _auto, _model in (
    (AutoModel, UltraFastBertModel),
    (AutoModelForMaskedLM, UltraFastBertForMaskedLM),
    (AutoModelForSequenceClassification, UltraFastBertForSequenceClassification),
    (AutoModelForTokenClassification, UltraFastBertForTokenClassification),
    (AutoModelForQuestionAnswering, UltraFastBertForQuestionAnswering),
):
    _auto.register(UltraFastBertConfig, _model, exist_ok=True)

__all__ = [
    "UltraFastBertConfig",
    "FastFeedForward",
    "fff_conditional",
    "fff_conditional_torch",
    "fff_masked",
    "native_kernel_status",
    "UltraFastBertPreTrainedModel",
    "UltraFastBertModel",
    "UltraFastBertForMaskedLM",
    "UltraFastBertForSequenceClassification",
    "UltraFastBertForTokenClassification",
    "UltraFastBertForQuestionAnswering",
]
