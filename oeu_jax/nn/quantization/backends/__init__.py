"""The quantization backends, one module each (see the parent package).

``aqt``: AQT's integer ``dot_general`` (convolutions as image patches) and
its freezer for serving. ``fake``: AQT's quantizers, then native float
convolutions (training at float cost), served through AQT. ``qwix``: Qwix's
quantized-training provider, served through Qwix's integer ops.
"""
