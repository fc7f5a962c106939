"""pick_cube_sim_vision sized as the HIL-SERL paper sizes its image tasks, for a GPU learner.

128x128 front and wrist images; a ResNet-10 backbone shared by both cameras, frozen, with
spatial learned embeddings and a 256-d bottleneck per camera; 2 critics of 256x256; batch 256
(128 online + 128 demo/intervention); critic:actor ratio 2; discount 0.97. The reward classifier
sees the same 128x128 cameras through a ResNet-10 too.

ImageNet-pretrained ResNet-10 weights are not downloaded by this project: convert HIL-SERL's
``resnet10_params.pkl`` or LeRobot's ``model.safetensors`` once with ``scripts/convert_resnet10.py``
and point ``agent.encoder.pretrained_path`` at the ``.npz``, e.g.
``--set agent.encoder.pretrained_path='/data/resnet10.npz'``. Without weights the learner refuses
to start (a frozen random backbone learns far more slowly) unless
``agent.encoder.allow_random_frozen=True``. The reward classifier trains its
ResNet-10 from scratch unless given the same file (``--set classifier.pretrained_path=...
--set classifier.freeze_backbone=True`` for train_classifier.py).

The steps are those of pick_cube_sim_vision, run from this folder with
``--exp_name pick_cube_sim_vision_gpu``; frames, classifier and runs live in this folder.
"""

from __future__ import annotations

from ml_collections import config_dict

from experiments.pick_cube_sim_vision.config import get_config as cpu_config
from experiments.pick_cube_sim_vision.config import make_env, make_expert  # noqa: F401  (same task)


def get_config() -> config_dict.ConfigDict:
    c = cpu_config()
    c.unlock()
    c.exp_name = "pick_cube_sim_vision_gpu"
    c.env.image_height = c.env.image_width = 128
    c.agent.shift_pad = c.classifier.shift_pad = 4  # as HIL-SERL at 128x128
    c.classifier.backbone = "resnet10"
    c.classifier.batch_size = 256
    c.classifier.hidden_dim = 256
    a = c.agent
    a.encoder.backbone = "resnet10"
    a.encoder.freeze_backbone = True
    a.encoder.bottleneck_dim = 256
    a.encoder.state_dim = 64
    a.hidden_dims = (256, 256)
    a.actor_lr = a.critic_lr = 3e-4
    a.batch_size = 256
    a.utd_ratio = 2
    c.learner.replay_capacity = 200_000
    c.learner.samples_per_insert = 512.0  # batch 256 x UTD 2: one learner step per env step
    c.actor.backpressure = False  # a GPU learner keeps up; the actor runs free
    c.lock()
    return c
