"""Tasks: LightningModules that wire a net (:mod:`zoo.nets`) to losses, metrics, optimizers and figures.

Configs inject the net through ``class_path``::

    model:
      class_path: zoo.tasks.classifier.Classifier
      init_args:
        net: {class_path: zoo.nets.convnet.ConvNet, init_args: {attention: cbam}}
"""
