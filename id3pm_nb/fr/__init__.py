"""The black box and its neighbours: face detection and alignment, the recognizers (dlib, FaceNet, ArcFace ONNX) and
the converter one of them needs."""
