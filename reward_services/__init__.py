"""Reward models as gRPC services: server, batching, health, registry and a resilient client.

    mixrl train-rm --out runs/rm/final                                   # a tiny RM on synthetic preference pairs
    mixrl serve-rm runs/rm/final --model-name chat-rm --registry local:runs/registry
    mixrl deploy-rm runs/rm/final --name chat-rm --local 2 --registry local:runs/registry

    from reward_services.client import RewardModelServiceClient
    router = RewardRouter(rm_client=RewardModelServiceClient.from_registry("local:runs/registry"))

Modules: `types` (containers), `proto/` (our ``RewardService`` and the Open Inference Protocol v2 messages,
generated code committed), `models` (classifier RM, generative judge), `server` (batching, deadlines,
backpressure, drain, auth, health, reflection), `oip` (KServe/Triton facade), `metrics` (Prometheus endpoint),
`registry_types` (the `Registry` protocol, `RegistryError`), `registry` (local folder, etcd,
`open_registry`) and `registry_k8s` (EndpointSlices), `client` (retries, hedging, balancing,
ejection, digest pinning, the `rewards.clients.RewardModelClient` adapter), `train` (Bradley-Terry RM training),
`deploy` (validation gate, Kubernetes manifests in ``deploy/``, local instances).

Never imports ``rl`` or ``sft`` (DESIGN.md); the CLI joins them.
"""
