"""Recognition on real inputs, torch-free: decoding, face detection, FER2013-style framing,
tracking, the ONNX Runtime session and backends, the ``Recognizer`` API and the run loop behind
``litefer predict``. The torch backend is a plug-in from the layer above (``litefer.torch_backend``)."""
