"""LeRobot SAC (PyTorch, CPU) learner throughput on one workload; prints one JSON line.

Runs in benchmarks/.peers/lerobot (see setup_peers.sh); started by
benchmarks/learner_throughput.py. Builds LeRobot's SACPolicy from SACConfig for a state-only
observation (observation.state: 20, action: 4), num_critics / num_subsample_critics as the
workload asks, Adam 3e-4 for actor, critics and temperature (as lerobot.rl.learner sets them up),
and a LeRobot ReplayBuffer filled with 100k random transitions. One call does what one
optimization step of lerobot.rl.learner does: UTD times (sample 256, critic loss, backward,
grad-norm clip, Adam step, target EMA), then one actor and one temperature update.

LeRobot's SAC is its own architecture: a shared 20->256 LayerNorm+tanh state encoder, critic
and actor MLPs of 256x256 with LayerNorm and SiLU (LayerNorm cannot be turned off, so W1 runs
with LayerNorm too), gradient clipping at norm 40. The config's default use_torch_compile=True
compiles the critic ensembles; --eager turns it off.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

T_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/learner_throughput.py

from learner_throughput import (  # noqa: E402
    ACTION_DIM,
    BATCH,
    BUFFER_ROWS,
    HIDDEN,
    LR,
    OBS_DIM,
    WORKLOADS,
    bench_threads,
    emit,
    measure,
)


def main() -> None:
    eager = "--eager" in sys.argv
    if eager:
        sys.argv.remove("--eager")
    from learner_throughput import runner_args

    args = runner_args()
    threads = bench_threads()
    import importlib.metadata

    import torch

    if threads:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    torch.manual_seed(args.seed)

    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.sac.configuration_sac import SACConfig
    from lerobot.policies.sac.modeling_sac import SACPolicy
    from lerobot.rl.buffer import ReplayBuffer

    w = WORKLOADS[args.workload]
    utd = w["utd"]
    state_key = "observation.state"
    config = SACConfig(
        input_features={state_key: PolicyFeature(type=FeatureType.STATE, shape=(OBS_DIM,))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
        device="cpu", storage_device="cpu", num_critics=w["num_qs"],
        num_subsample_critics=w["num_min_qs"], utd_ratio=utd, policy_update_freq=1,
        critic_lr=LR, actor_lr=LR, temperature_lr=LR, online_buffer_capacity=BUFFER_ROWS,
        use_torch_compile=not eager,
    )
    config.critic_network_kwargs.hidden_dims = list(HIDDEN)
    config.actor_network_kwargs.hidden_dims = list(HIDDEN)
    policy = SACPolicy(config)
    policy.train()
    clip = config.grad_clip_norm
    # the optimizers lerobot.rl.learner builds (the shared encoder is trained by the critic)
    opt_actor = torch.optim.Adam(
        [p for n, p in policy.actor.named_parameters() if not n.startswith("encoder")], lr=LR)
    opt_critic = torch.optim.Adam(policy.critic_ensemble.parameters(), lr=LR)
    opt_temp = torch.optim.Adam([policy.log_alpha], lr=LR)

    buffer = ReplayBuffer(BUFFER_ROWS, device="cpu", state_keys=[state_key], use_drq=False,
                          image_augmentation_function=lambda x: x, storage_device="cpu")
    zero_state = {state_key: torch.zeros(1, OBS_DIM)}
    buffer.add(zero_state, torch.zeros(1, ACTION_DIM), 0.0, zero_state, False, False)
    gen = torch.Generator().manual_seed(args.seed)
    buffer.states[state_key].copy_(torch.randn(BUFFER_ROWS, OBS_DIM, generator=gen))
    buffer.next_states[state_key].copy_(torch.randn(BUFFER_ROWS, OBS_DIM, generator=gen))
    buffer.actions.copy_(torch.rand(BUFFER_ROWS, ACTION_DIM, generator=gen) * 2 - 1)
    buffer.rewards.copy_(torch.randn(BUFFER_ROWS, generator=gen))
    buffer.dones.copy_(torch.rand(BUFFER_ROWS, generator=gen) < 0.01)
    buffer.truncateds.zero_()
    buffer.size, buffer.position = BUFFER_ROWS, 0

    def forward_batch():
        b = buffer.sample(BATCH)
        return {"action": b["action"], "reward": b["reward"], "state": b["state"],
                "next_state": b["next_state"], "done": b["done"],
                "observation_feature": None, "next_observation_feature": None}

    def optimize(loss, optimizer, params):
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=clip)
        optimizer.step()

    def step():
        for _ in range(utd):
            batch = forward_batch()
            loss = policy.forward(batch, model="critic")["loss_critic"]
            optimize(loss, opt_critic, policy.critic_ensemble.parameters())
            policy.update_target_networks()
        loss = policy.forward(batch, model="actor")["loss_actor"]
        optimize(loss, opt_actor, policy.actor.parameters())
        loss = policy.forward(batch, model="temperature")["loss_temperature"]
        optimize(loss, opt_temp, [policy.log_alpha])
        loss.item()  # eager torch on the CPU is synchronous; this mirrors the learner's logging

    setup_s = time.perf_counter() - T_START
    result = measure(step, utd, args.seconds, args.repeats)
    emit("lerobot", args.workload, setup_s, result, version=importlib.metadata.version("lerobot"),
         torch=torch.__version__, threads=torch.get_num_threads(), torch_compile=not eager,
         critic_layer_norm=True)


if __name__ == "__main__":
    main()
