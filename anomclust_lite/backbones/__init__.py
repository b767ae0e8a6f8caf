"""How each feature-extractor model is built, without torch.

- :mod:`.wrn50`: torchvision's WideResNet-50-2 up to ``layer2`` as an ONNX model
  (architecture, checkpoint download and verification, ONNX graph, export, a
  NumPy reference forward pass, random weights);
- :mod:`.torch_checkpoint`: the tensors of a ``torch.save`` file as NumPy arrays,
  read through the restricted, data-only unpickler of :mod:`.torch_unpickle`.

:mod:`anomclust_lite.features.models` decides which model to use; nothing here
imports :mod:`anomclust_lite.features`.
"""
