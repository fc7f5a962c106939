"""Convert pretrained ResNet-10 weights into the backbone .npz this project loads.

    python scripts/convert_resnet10.py --input ~/.serl/resnet10_params.pkl --output resnet10.npz
    python scripts/convert_resnet10.py --input model.safetensors --output resnet10.npz   # LeRobot's (helper2424/resnet10)

Reads HIL-SERL's released flax parameters (``resnet10_params.pkl``; unpickled with arrays and
dicts only, never code) or LeRobot's PyTorch port (``model.safetensors``, or a ``.bin`` / ``.pt``
state dict with torch installed); serl_launcher/networks/pretrained.py documents both layouts.
Every parameter is checked against this project's ResNet-10 (names, shapes, finite values), the
file is written atomically, and the config line that uses it is printed. Nothing is downloaded:
fetch the file yourself (HIL-SERL: SERL's GitHub release ``resnet10``; LeRobot: the hub model).
"""

from __future__ import annotations

from absl import app, flags

_INPUT = flags.DEFINE_string("input", None, "The weight file (.pkl, .safetensors, .bin, .pt).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The .npz to write.", required=True)
_KIND = flags.DEFINE_enum("kind", None, ["hil_serl", "torch"], "The layout (default: from the extension).")


def main(argv: list[str]) -> None:
    del argv
    import os
    import tempfile
    from pathlib import Path

    import numpy as np

    from serl_launcher.networks.pretrained import WeightsFormatError, convert

    output = Path(_OUTPUT.value).expanduser()
    if output.suffix != ".npz":
        raise app.UsageError(f"--output {output}: the backbone file is an .npz")
    try:
        params = convert(Path(_INPUT.value).expanduser(), _KIND.value)
    except (WeightsFormatError, FileNotFoundError, ImportError) as error:
        raise app.UsageError(str(error)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **params)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    count = sum(v.size for v in params.values())
    print(f"wrote {output}: ResNet-10, {len(params)} arrays, {count:,} parameters")
    print(f"use it: --set agent.encoder.pretrained_path={str(output.resolve())!r} "
          f"(and classifier.pretrained_path for the reward classifier)")


if __name__ == "__main__":
    app.run(main)
