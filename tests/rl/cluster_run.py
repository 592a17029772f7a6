"""A GRPO run on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`), in its own process.

    python tests/rl/cluster_run.py MODEL_DIR DATA_DIR RUN_DIR   # prints one JSON line: where each side ran

Node "head" holds the rollout engine (custom resource rollout_node), node "trainer" the two trainer ranks
(trainer_node); the placement pins each side by those resources. Run by tests/rl/test_multinode.py.
"""

import json
import sys
from pathlib import Path


def main(model: str, data: str, run_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from rl.grpo import run_grpo
    from rl.trainer_group import TrainerGroup
    from tests.rl.conftest import grpo_test_config

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"rollout_node": 1}})
    cluster.add_node(num_cpus=2, resources={"trainer_node": 2})
    ray.init(address=cluster.address)
    seen: dict = {}
    original = TrainerGroup.__init__

    def recording(self, cfg):  # where the ranks ran and where their rendezvous was hosted
        original(self, cfg)
        seen["trainer_nodes"] = self.diagnostic_node()
        seen["rendezvous_host"] = self.rendezvous[0]

    TrainerGroup.__init__ = recording
    cfg = grpo_test_config({"model": model, "data": data}, Path(run_dir), max_steps=1, prompts_per_step=2,
                           ray={"address": cluster.address, "num_cpus": 0},
                           placement={"trainer_workers": 2, "trainer_resources": {"trainer_node": 1},
                                      "rollout_resources": {"rollout_node": 1}})
    summary = run_grpo(cfg)
    nodes = {n["NodeID"]: n for n in ray.nodes()}
    by_label = {label: nid for nid, n in nodes.items() for label in ("rollout_node", "trainer_node") if label in n["Resources"]}
    print(json.dumps({"summary_steps": summary["steps"], "weight_version": summary["weight_version"],
                      "trainer_nodes": seen["trainer_nodes"], "trainer_node": by_label["trainer_node"],
                      "rollout_node": by_label["rollout_node"], "rendezvous_host": seen["rendezvous_host"],
                      "trainer_node_address": nodes[by_label["trainer_node"]]["NodeManagerAddress"]}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
