"""Image files -> bags of patch embeddings (Pillow + onnxruntime).

One concept per module, in the order the data flow through them:

- :mod:`.listing`: the image files of a folder (:func:`~.listing.find_images`);
  :mod:`.folders` adds the exclusion rules and labels from class sub-folders;
- :mod:`.images`: the image policy; :func:`~.images.read_image_file` is the one
  function that opens image files, :func:`~.images.load_image_bytes` decodes them;
- :mod:`.preprocess`: resize the shorter side, centre-crop, ImageNet normalisation;
- :mod:`.models`: which ONNX model to use (:func:`~.models.resolve_model`, the one
  place a default backbone is chosen; how a backbone is built lives in
  :mod:`anomclust_lite.backbones`);
- :mod:`.onnx_session`: the model opened, checked and run (:class:`~.onnx_session.BackboneSession`);
- :mod:`.postprocess`: feature maps -> bags (3x3 average pooling, unit L2 norm);
- :mod:`.cache`: the content-keyed on-disk feature cache;
- :mod:`.pipeline`: the steps of one extraction (decode in threads, batch, cache, collect);
- :mod:`.extractor`: :class:`~.extractor.Extractor`, which ties them together.
"""
