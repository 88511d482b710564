"""Recognition on real inputs: decoding, face detection, FER2013-style framing, model backends
(torch or ONNX Runtime), the ``Recognizer`` API and the ``litefer predict`` command."""
