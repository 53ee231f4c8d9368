"""The kinds of runnable file a bundle holds: ONNX vision encoder, GGUF LM and llama.cpp mmproj.

Each kind is an :class:`~export.kinds.base.ArtifactKind` in its own module (:mod:`.vision`,
:mod:`.lm`, :mod:`.mmproj`): it plans (checks the precisions asked for), writes a base file,
quantizes the other precisions from it, validates every file against PyTorch and gates it, and
describes a validation in one line. :mod:`.registry` lists them in bundle order; the bundle writer
(:mod:`export.bundle`) is a loop over that list.
"""
