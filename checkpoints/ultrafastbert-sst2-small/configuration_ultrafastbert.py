# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""UltraFastBERT configuration."""

from transformers import PreTrainedConfig

# kept in sync with fast_feedforward.py (not imported from there so that the config has no torch-heavy imports)
_FFF_INFERENCE_MODES = ("conditional", "dense")
_FFF_KERNELS = ("auto", "torch", "native")
_MAX_FFF_DEPTH = 24
_POSITION_EMBEDDING_TYPES = ("scaled_sinusoidal", "learned")
_CLASSIFIER_POOLINGS = ("avg", "cls")


class UltraFastBertConfig(PreTrainedConfig):
    r"""
    Configuration of an UltraFastBERT model: a crammedBERT encoder (pre-LayerNorm blocks, scaled-sinusoidal positions,
    bias-free dense layers, final LayerNorm, MLM decoder tied to the word embeddings) whose feedforward blocks are fast
    feedforward (FFF) layers of ``fff_trees`` binary trees of depth ``fff_depth``.

    The defaults describe UltraFastBERT-1x11 (16 layers, hidden 768, 12 heads, vocabulary 32768, one tree of depth
    11: 12 of 4095 neurons used per token).

    Args:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads: encoder shape.
        fff_depth (`int`, *optional*, defaults to 11): depth D of each tree; a tree has 2**(D+1)-1 neurons.
        fff_trees (`int`, *optional*, defaults to 1): number K of trees, whose outputs are summed.
        max_position_embeddings (`int`, *optional*, defaults to 128): longest accepted sequence.
        position_embedding_type (`str`, *optional*, defaults to `"scaled_sinusoidal"`): `"scaled_sinusoidal"`
            (crammedBERT: fixed sinusoids times one learned scalar) or `"learned"`.
        hidden_dropout_prob, attention_probs_dropout_prob, embedding_dropout_prob: dropout rates.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12): LayerNorm epsilon.
        classifier_pooling (`str`, *optional*, defaults to `"avg"`): `"avg"` (mean over real tokens) or `"cls"`.
        classifier_hidden_size (`int`, *optional*): width of the Tanh pooler layer (defaults to `hidden_size`).
        classifier_dropout (`float`, *optional*, defaults to 0.1): dropout after the pooler.
        classifier_pool_includes_padding (`bool`, *optional*, defaults to `False`): reproduce the original release's
            "avg" pooler, which averages over all positions, padding included. Off by default, so that a sentence
            gets the same prediction whatever it is padded to.
        fff_inference (`str`, *optional*, defaults to `"conditional"`): eval-mode FFF computation, `"conditional"`
            (visits D+1 nodes per tree) or `"dense"` (the masked computation of the original release).
        fff_kernel (`str`, *optional*, defaults to `"auto"`): conditional implementation, `"auto"` (best available
            for the tensor's device), `"torch"` (pure PyTorch) or `"native"` (compiled CPU / GPU kernel, error if
            absent).
        weight_quantization (`dict`, *optional*): set on AdaptivFloat checkpoints (`conversion/quantize_adaptivfloat.py`),
            e.g. `{"format": "adaptivfloat", "bits": 8, "exponent_bits": 3, "projection_dtype": "bfloat16"}`: the
            weight matrices are stored as uint8 codes with per-tensor exponent biases; `None` for float weights.
        exit_ramps (`bool`, *optional*, defaults to `False`): give the sequence-classification head an off-ramp
            (LayerNorm, pooler, classifier) after every layer but the last, whose exit is the final head
            (DeeBERT / EdgeBERT early exit).
        early_exit_entropy (`float`, *optional*): entropy threshold S of the exit rule: in eval mode an example leaves
            at the first layer whose ramp's softmax entropy is below S. `None` runs every layer. Needs `exit_ramps`.
        exit_predictor (`dict`, *optional*): EdgeBERT's exit-layer predictor for the current threshold, a lookup
            table `{"entropy_bin_edges": [...], "exit_layers": [...]}` from the first ramp's entropy to the predicted
            exit layer (one more layer than edges), fitted on held-out data (`early_exit.fit_exit_predictor`).
        exit_calibration (`list`, *optional*): the calibration curve measured on held-out data, one dict per
            threshold (`threshold`, `mean_layers`, `accuracy`, `exit_predictor`); the exit budget knob
            (`UltraFastBertForSequenceClassification.set_exit_budget`) picks a threshold from it.
        num_hidden_groups (`int`, *optional*): ALBERT's cross-layer parameter sharing: the layers form this many
            groups of consecutive layers, each group running one shared block (layer i runs block
            i * num_hidden_groups // num_hidden_layers). `None` or `num_hidden_layers`: no sharing.
        embedding_size (`int`, *optional*): ALBERT's factorized embeddings: word (and position) embeddings of this
            width, projected to `hidden_size`; the tied MLM decoder projects hidden states back to this width before
            the (vocab, embedding_size) word-embedding matrix. `None` or `hidden_size`: no factorization.
        pruning (`dict`, *optional*): set on pruned checkpoints (`modeling_ultrafastbert.pruning.Pruner.finalize`): the
            method, `encoder_sparsity`, `embedding_sparsity` and the fraction of zeros of every pruned tensor
            (`tensor_sparsity`); compact checkpoints (`conversion/compact_pruned.py`) add `compact_tensors`, the
            tensors stored as bit mask + non-zero values, with their non-zero counts. `None` for unpruned models.
        adaptive_span (`bool`, *optional*, defaults to `False`): give every attention head a learned span z (EdgeBERT's
            adaptive attention span): its weights are masked by clamp((R + z - d) / R, 0, 1) at token distance d and
            renormalised; at inference heads of span 0 are skipped and the others attend inside their band only.
        adaptive_span_ramp (`float`, *optional*, defaults to 16.0): the ramp R of the soft mask, in tokens.
        adaptive_span_penalty (`float`, *optional*, defaults to 0.0): coefficient of the span penalty
            (coefficient * mean z, z in tokens) added to the heads' training losses.
        adaptive_span_penalty_form (`str`, *optional*, defaults to `"mean"`): `"mean"`: coefficient * mean z over all
            heads (EdgeBERT); `"layer_rms"`: coefficient * mean over layers of the root mean square of the layer's
            spans z + R, a group penalty that pushes the last open heads of a layer harder, so that spans close whole
            layers (whose attention is then skipped outright) rather than heads scattered over layers. Equal spans
            give both forms the same gradient.
        adaptive_span_init (`float`, *optional*): initial z of every head, in tokens (default: max_position_embeddings,
            i.e. the model starts as plain attention).
        cuda_graphs (`str`, *optional*, defaults to `"auto"`): `"auto"`: on CUDA, an inference call (eval, no
            autograd, no labels or extra outputs) whose shapes were seen before is replayed from a recorded CUDA graph
            instead of launching every kernel from Python (`cuda_graphs.py` lists the conditions); `"off"`: always
            launch eagerly. No effect on the CPU.
    """

    model_type = "ultrafastbert"

    vocab_size: int = 32768
    hidden_size: int = 768
    num_hidden_layers: int = 16
    num_attention_heads: int = 12
    fff_depth: int = 11
    fff_trees: int = 1
    max_position_embeddings: int = 128
    position_embedding_type: str = "scaled_sinusoidal"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    embedding_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    classifier_pooling: str = "avg"
    classifier_hidden_size: int | None = None
    classifier_dropout: float = 0.1
    classifier_pool_includes_padding: bool = False
    fff_inference: str = "conditional"
    fff_kernel: str = "auto"
    weight_quantization: dict | None = None
    exit_ramps: bool = False
    early_exit_entropy: float | None = None
    exit_predictor: dict | None = None
    exit_calibration: list | None = None
    num_hidden_groups: int | None = None
    embedding_size: int | None = None
    pruning: dict | None = None
    adaptive_span: bool = False
    adaptive_span_ramp: float = 16.0
    adaptive_span_penalty: float = 0.0
    adaptive_span_penalty_form: str = "mean"
    adaptive_span_init: float | None = None
    cuda_graphs: str = "auto"

    def __post_init__(self, **kwargs):
        if self.classifier_hidden_size is None:
            self.classifier_hidden_size = self.hidden_size
        self._validate_ultrafastbert()
        self._validate_albert_options()
        self.validate_early_exit()
        self._validate_adaptive_span()
        super().__post_init__(**kwargs)

    def _validate_ultrafastbert(self):
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UltraFastBertConfig.{name} must be a positive integer, got {value!r}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "fff_trees",
                     "max_position_embeddings", "classifier_hidden_size"):
            positive_int(name)
        if isinstance(self.fff_depth, bool) or not isinstance(self.fff_depth, int) or not 0 <= self.fff_depth <= _MAX_FFF_DEPTH:
            raise ValueError(
                f"UltraFastBertConfig.fff_depth must be an integer in [0, {_MAX_FFF_DEPTH}] "
                f"(a tree has 2**(depth+1)-1 neurons), got {self.fff_depth!r}"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"UltraFastBertConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name, allowed in (
            ("fff_inference", _FFF_INFERENCE_MODES),
            ("fff_kernel", _FFF_KERNELS),
            ("position_embedding_type", _POSITION_EMBEDDING_TYPES),
            ("classifier_pooling", _CLASSIFIER_POOLINGS),
            ("cuda_graphs", ("auto", "off")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"UltraFastBertConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "embedding_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"UltraFastBertConfig.{name} must be a probability in [0, 1], got {value!r}")
        if self.weight_quantization is not None and (
            not isinstance(self.weight_quantization, dict) or self.weight_quantization.get("format") != "adaptivfloat"
        ):
            raise ValueError(
                "UltraFastBertConfig.weight_quantization must be None or a dict with format 'adaptivfloat', got "
                f"{self.weight_quantization!r}"
            )
        if self.pruning is not None and not isinstance(self.pruning, dict):
            raise ValueError(f"UltraFastBertConfig.pruning must be None or a dict, got {self.pruning!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            raise ValueError(f"UltraFastBertConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"UltraFastBertConfig.pad_token_id ({self.pad_token_id}) must lie in [0, vocab_size={self.vocab_size})"
            )

    def validate_early_exit(self):
        """Check the early-exit fields (also called before every exiting forward, since they may be set later)."""
        if not isinstance(self.exit_ramps, bool):
            raise ValueError(f"UltraFastBertConfig.exit_ramps must be a bool, got {self.exit_ramps!r}")
        if self.exit_ramps and self.num_hidden_layers < 2:
            raise ValueError(
                "UltraFastBertConfig.exit_ramps needs num_hidden_layers >= 2: the off-ramps sit after every layer but "
                f"the last, so a model of {self.num_hidden_layers} layer has none to exit from or to train"
            )
        threshold = self.early_exit_entropy
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
                raise ValueError(
                    f"UltraFastBertConfig.early_exit_entropy must be None or a non-negative number (an entropy in "
                    f"nats), got {threshold!r}"
                )
            if not self.exit_ramps:
                raise ValueError(
                    "UltraFastBertConfig.early_exit_entropy is set but the model has no off-ramps (exit_ramps=False): "
                    "early exit needs a checkpoint trained with exit_ramps=True"
                )
        predictor = self.exit_predictor
        if predictor is not None:
            if not isinstance(predictor, dict) or set(predictor) != {"entropy_bin_edges", "exit_layers"}:
                raise ValueError(
                    "UltraFastBertConfig.exit_predictor must be a dict with keys 'entropy_bin_edges' and 'exit_layers', "
                    f"got {predictor!r}"
                )
            edges, layers = predictor["entropy_bin_edges"], predictor["exit_layers"]
            if len(layers) != len(edges) + 1 or any(b < a for a, b in zip(edges, edges[1:])):
                raise ValueError(
                    "UltraFastBertConfig.exit_predictor needs ascending entropy_bin_edges and one more exit layer than "
                    f"edges, got {len(edges)} edges and {len(layers)} layers"
                )
            if any(not 1 <= int(layer) <= self.num_hidden_layers for layer in layers):
                raise ValueError(
                    f"UltraFastBertConfig.exit_predictor exit_layers must lie in [1, {self.num_hidden_layers}], "
                    f"got {layers}"
                )
        if self.exit_calibration is not None and not isinstance(self.exit_calibration, list):
            raise ValueError(f"UltraFastBertConfig.exit_calibration must be a list of dicts, got {self.exit_calibration!r}")

    def _validate_albert_options(self):
        for name, upper in (("num_hidden_groups", "num_hidden_layers"), ("embedding_size", "hidden_size")):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= getattr(self, upper):
                raise ValueError(
                    f"UltraFastBertConfig.{name} must be None or an integer in [1, {upper}={getattr(self, upper)}], "
                    f"got {value!r}"
                )

    @property
    def word_embedding_size(self) -> int:
        """Width of the word embeddings (ALBERT's E): `embedding_size` when factorized, else `hidden_size`."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def factorized_embeddings(self) -> bool:
        return self.word_embedding_size != self.hidden_size

    def layer_groups(self) -> list[int]:
        """The shared block (group index) each layer runs: layer i runs group i * G // L, as in ALBERT."""
        layers = self.num_hidden_layers
        groups = layers if self.num_hidden_groups is None else min(self.num_hidden_groups, layers)
        return [index * groups // layers for index in range(layers)]
    def _validate_adaptive_span(self):
        if not isinstance(self.adaptive_span, bool):
            raise ValueError(f"UltraFastBertConfig.adaptive_span must be a bool, got {self.adaptive_span!r}")
        ramp = self.adaptive_span_ramp
        if isinstance(ramp, bool) or not isinstance(ramp, (int, float)) or not ramp > 0:
            raise ValueError(f"UltraFastBertConfig.adaptive_span_ramp must be a positive number of tokens, got {ramp!r}")
        penalty = self.adaptive_span_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty >= 0:
            raise ValueError(f"UltraFastBertConfig.adaptive_span_penalty must be a number >= 0, got {penalty!r}")
        if self.adaptive_span_penalty_form not in ("mean", "layer_rms"):
            raise ValueError(f"UltraFastBertConfig.adaptive_span_penalty_form must be 'mean' or 'layer_rms', got "
                             f"{self.adaptive_span_penalty_form!r}")
        initial = self.adaptive_span_init
        if initial is not None and (
            isinstance(initial, bool) or not isinstance(initial, (int, float))
            or not -ramp <= initial <= self.max_position_embeddings
        ):
            raise ValueError(
                f"UltraFastBertConfig.adaptive_span_init must be None or a span in [-adaptive_span_ramp, "
                f"max_position_embeddings] = [{-ramp}, {self.max_position_embeddings}] tokens, got {initial!r}"
            )

    @property
    def fff_num_nodes(self) -> int:
        """Neurons per tree."""
        return 2 ** (self.fff_depth + 1) - 1


__all__ = ["UltraFastBertConfig"]
