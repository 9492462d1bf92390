"""tf-lth: lottery tickets and supermasks for TensorFlow 2 / Keras 3."""

from setuptools import find_packages, setup

setup(
    name="tf-lth",
    version="0.1.0",
    description=(
        "Deconstructing Lottery Tickets (Zhou et al., NeurIPS 2019) for Keras 3: masked "
        "layers, every mask criterion and action, supermasks, SavedModel and LiteRT export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tf_lth", "tf_lth.*", "trainers", "trainers.*",
                                    "export", "export.*"]),
    install_requires=[
        # Tested: the newest pip gives, and the oldest pair .ci/run pins (TF 2.16, Keras 3.10)
        "tensorflow>=2.16,<3",
        "keras>=3.10,<4",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets 4.9 needs it on Python 3.11
        "keras-tuner[bayesian]>=1.4",
        "tensorflow-model-optimization>=0.8",
        "tf-keras>=2.16,<3",
        "ai-edge-litert",
        "matplotlib",
        "tensorboard",
        "absl-py",
        "numpy",
        "tqdm",
    ],
    # bench: PyTorch as an outside reference for `make bench`; never a runtime dependency
    extras_require={"test": ["pytest"], "bench": ["torch"]},
    entry_points={
        "console_scripts": [
            "tf-lth-train=tf_lth.train:run",
        ]
    },
)
