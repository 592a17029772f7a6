"""Foundations every stage uses: config, datasets, models, tokenizers, chat rendering, the vLLM engine, optimizer, metrics.

Modules:
- `core.config`      dataclass schema + YAML recipe + `section.key=value` overrides; resolved config per run
- `core.sections`    config sections more than one stage shares (optimizer, tiny model, synthetic datasets)
- `core.data`        the verl row schema and one loader for parquet / jsonl / Hugging Face folders
- `core.tokenizer`   byte-level BPE with the chat markers and thinking-mode tokens, the ChatML template
- `core.chat`        chat rendering through the model's own template: loss masks, prompt ids, the thinking switch
- `core.thinking`    thinking-mode fusion on any model: control tokens added, embeddings grown, template taught the switch
- `core.model`       the tiny Qwen2 factory; saving and loading Hugging Face folders
- `core.engine`      the vLLM generation engine (AsyncLLM): groups of samples with token ids and logprobs
- `core.generate`    batch generation for evaluation: vLLM offline or transformers
- `core.optim`       AdamW and the warm-up + cosine schedule; new hyperparameters on resume
- `core.checkpoint`  checkpoint layout and the resume vocabulary every stage shares
- `core.seeds`       every seed a run derives from its recipe's seed
- `core.metrics`     console / JSONL / TensorBoard metrics logger
- `core.plots`       PNG curves of run metrics

It imports no stage package (`rl`, `sft`, `rewards`, `reward_services`, `sandbox`) and never `mixrl`.
"""
