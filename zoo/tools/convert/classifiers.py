"""Legacy checkpoint rules: the classifier family (CNN, CBAMNet, ImageClassifier, LeNet5, MnistCNN,
SpatialAttentionCNN became :class:`zoo.tasks.classifier.Classifier` around a :mod:`zoo.nets` net)."""

from __future__ import annotations

from typing import Any

from zoo.tools.convert import prefix_keys, split_args

CLASSIFIER = "zoo.tasks.classifier.Classifier"
CONVNET = "zoo.nets.convnet.ConvNet"
CONVNET_ARGS = ["in_channels", "channels", "hidden", "dropout", "num_classes", "reduction", "attention_kernel",
                "channels_last"]
AUGMENT_ARGS = ["augment", "hflip", "contrast", "translate", "augment_seed"]


def _classifier(net_path: str, net_args: list[str], fixed: dict[str, Any] | None = None):
    def rule(hparams: dict[str, Any], state_dict: dict[str, Any]):
        net, task = split_args(hparams, net_args)
        task = {k: v for k, v in task.items() if k not in AUGMENT_ARGS}
        if hparams.get("augment"):  # ImageClassifier's flags became an injected BatchAugment
            task["augment"] = {"class_path": "datamodules.augment.BatchAugment", "init_args": {
                "translate": hparams.get("translate", 0.1), "hflip": hparams.get("hflip", 0.5),
                "contrast": hparams.get("contrast", 0.2), "value_range": [0.0, 1.0],
                "padding_mode": "reflection", "seed": hparams.get("augment_seed")}}
        if "num_classes" in hparams:
            net["num_classes"] = hparams["num_classes"]
        net.update(fixed or {})
        return ({"_class_path": CLASSIFIER, "net": {"class_path": net_path, "init_args": net}, **task},
                prefix_keys(state_dict, "net."))
    return rule


RULES = {
    "zoo.audio_cnn.CNN": _classifier(CONVNET, CONVNET_ARGS, {"attention": "none"}),
    "zoo.audio_cnn.CBAMNet": _classifier(CONVNET, CONVNET_ARGS, {"attention": "cbam"}),
    "zoo.image_classifier.ImageClassifier": _classifier(CONVNET, CONVNET_ARGS, {"attention": "none"}),
    "zoo.mnist_classifiers.LeNet5": _classifier("zoo.nets.lenet.LeNet5",
                                                ["in_channels", "activation", "dropout", "num_classes"]),
    "zoo.mnist_classifiers.MnistCNN": _classifier("zoo.nets.lenet.MnistCNN",
                                                  ["in_channels", "channels", "hidden", "dropout", "num_classes"],
                                                  {"attention": "none"}),
    "zoo.mnist_classifiers.SpatialAttentionCNN": _classifier(
        "zoo.nets.lenet.MnistCNN", ["in_channels", "channels", "hidden", "dropout", "num_classes",
                                    "attention_kernel"], {"attention": "spatial"}),
}
