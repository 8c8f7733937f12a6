"""Networks: plain ``nn.Module`` s, one file per family, usable without Lightning.

A net owns only its forward computation; variants are constructor arguments (e.g.
``ConvNet(attention="cbam")``). Training (losses, metrics, optimizers, figures) is a task's job
(:mod:`zoo.tasks`), which takes the net as its ``net`` argument.
"""
