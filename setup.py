"""One distribution for the library, the sim tasks, the robot infrastructure and the experiments."""

from setuptools import find_packages, setup

setup(
    name="serl-jax",
    version="0.1.0",
    description="Sample-efficient robot RL with a human in the loop (JAX/Flax, SERL/HIL-SERL style).",
    python_requires=">=3.10",
    packages=find_packages(
        include=["serl_launcher*", "sim_envs*", "robot_infra*", "experiments*"]
    ),
    package_data={"sim_envs": ["xmls/*.xml"], "experiments": ["*/*.sh"]},
    install_requires=[
        "absl-py",
        "chex",
        "distrax",
        "dm-robotics-transformations",
        "flax",
        "gymnasium>=1.0",
        "imageio",
        "imageio-ffmpeg",
        "jax",
        "matplotlib",
        # Inverse kinematics of the SO-101 / Koch arms (sim_envs.kinematics), with its QP solver.
        "mink>=1.3",
        "daqp",
        "ml-collections",
        "msgpack",
        "mujoco>=3.2",
        "numpy",
        "opencv-python-headless",
        "optax",
        "orbax-checkpoint",
        "pyzmq",
        # Reading LeRobot's PyTorch ResNet-10 weights (scripts/convert_resnet10.py), without torch.
        "safetensors",
        # distrax imports tensorflow_probability; only the nightly works with current jax.
        "tfp-nightly",
        "tqdm",
    ],
    # Intervention devices outside serl_launcher register here (serl_launcher.human.devices).
    entry_points={
        "serl_launcher.devices": [
            "viewer = sim_envs.viewer:ViewerKeyboard",
            "leader_arm = robot_infra.leader_arm:LeaderArm",
        ],
    },
    extras_require={
        "robot": ["dynamixel-sdk", "feetech-servo-sdk", "hidapi", "pynput", "pyserial"],
        # Hardware-only, not installed by the setup script (no arm or camera here):
        "franka": ["franky-control>=2.0"],  # robot_infra.robot_server's Franka backend
        "realsense": ["pyrealsense2"],  # robot_infra.cameras.RealSenseCamera
        # Datasets in LeRobot's format (serl_launcher.data.lerobot): parquet and video.
        "lerobot": ["av", "pyarrow"],
        # Metrics sinks besides JSON lines (config logging.wandb / logging.tensorboard).
        "monitoring": ["tensorboardX", "wandb"],
        # RLDS export (scripts/export_rlds.py); TensorFlow, so not installed by the set-up script.
        # (tensorflow-datasets imports importlib_resources without declaring it.)
        "rlds": ["importlib_resources", "tensorflow-cpu", "tensorflow-datasets"],
        # The tests read exported datasets back with Hugging Face datasets (as LeRobot does) and
        # TensorBoard event files with TensorBoard's own reader.
        "dev": ["datasets", "pandas", "pytest", "pytest-timeout", "ruff", "tensorboard"],
    },
)
