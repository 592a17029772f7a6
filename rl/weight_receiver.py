"""The engine side of the gloo weight-transfer backend (`rl.weight_sync` has the trainer side and the wire format):
the transfer engine vLLM runs in its worker process, registered with vLLM's factory when this module is imported.

vLLM imports this module in its worker process through the `worker_extension_cls` hook (the engine args name
`WeightVersionExtension`, `rl.weight_sync.WORKER_EXTENSION`) before the worker loads the model, whatever process vLLM
spawned or forked the worker in; the rollout engine imports it at its start, in its own process. Nothing else does:
it imports vLLM, which a trainer's process does not need.
"""

from __future__ import annotations

import torch
from vllm.distributed.weight_transfer.base import WeightTransferEngine

from rl.weight_sync import (BACKEND, GlooWeightTransferInitInfo, GlooWeightTransferUpdateInfo, numel, open_group,
                            plan_buckets)


class GlooWeightTransferEngine(WeightTransferEngine):
    """Worker side of the gloo backend (runs inside vLLM's worker process)."""

    init_info_cls = GlooWeightTransferInitInfo
    update_info_cls = GlooWeightTransferUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group = None
        self.store = None
        self.rank = -1

    def init_transfer_engine(self, init_info: GlooWeightTransferInitInfo) -> None:
        parallel = self.parallel_config
        self.rank = init_info.rank_offset + parallel.data_parallel_index * parallel.world_size + parallel.rank
        self.store, self.group = open_group(init_info.master_address, init_info.master_port, self.rank,
                                            init_info.world_size)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        refresh_tied_heads(self.model)

    def update_weights(self, update_info: dict) -> None:
        # the base class would call torch.accelerator.synchronize(), which has no CPU accelerator to sync
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: GlooWeightTransferUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("gloo weight transfer not initialised: call init_weight_transfer_engine first")
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        with disable_mtp_completeness_check():
            for bucket in plan_buckets(update_info.dtype_names, update_info.shapes, update_info.bucket_bytes):
                dtype = getattr(torch, update_info.dtype_names[bucket[0]])
                numels = [numel(update_info.shapes[i]) for i in bucket]
                flat = torch.empty(sum(numels), dtype=dtype)  # [sum of numels]
                self.group.broadcast(flat, 0).wait()
                weights = [(update_info.names[i], part.view(update_info.shapes[i]))
                           for i, part in zip(bucket, torch.split(flat, numels))]
                self.model.load_weights(weights)

    def shutdown(self) -> None:
        self.group = None
        self.store = None


def refresh_tied_heads(model: torch.nn.Module) -> int:
    """Re-pack output heads tied to an input embedding (`tie_word_embeddings`); returns how many.

    Found here, not documented by vLLM 0.32: on the CPU backend the tied `lm_head` keeps a packed copy of the
    embedding made at the first load (`dispatch_cpu_unquantized_gemm(remove_weight=False)`). Layerwise reload
    writes the new embedding into the shared Parameter but never re-processes `lm_head` (no weight is loaded
    under its name), so without this the logits would come from the old weights (measured: 0.34 nats of
    logprob error after a sync that changed only the embedding).
    """
    embeddings = {id(m.weight) for m in model.modules() if type(m).__name__ == "VocabParallelEmbedding"}
    refreshed = 0
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        tied = id(getattr(module, "weight", None)) in embeddings
        if type(module).__name__ == "ParallelLMHead" and tied and method is not None:
            method.process_weights_after_loading(module)
            refreshed += 1
    return refreshed


def register_gloo_backend() -> None:
    """Register the gloo backend with vLLM's factory (idempotent; runs on import of this module)."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, GlooWeightTransferEngine)


class WeightVersionExtension:
    """vLLM `worker_extension_cls`: naming it (`core.engine.RolloutEngine(worker_extension_cls=WORKER_EXTENSION)`)
    makes vLLM import this module in the worker process, registering the gloo backend before the worker creates
    its transfer engine. Its one method is a diagnostic (`collective_rpc("torch_threads")`)."""

    def torch_threads(self) -> int:
        """The model's intra-op threads in this worker process (what `rl.placement.rollout_threads` asked for)."""
        return torch.get_num_threads()


register_gloo_backend()
