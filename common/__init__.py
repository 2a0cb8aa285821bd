"""Shared, unit-tested helpers for the attention & Vision Transformer labs.

Import the submodules you need, e.g. ``from common.attention import scaled_dot_product_attention``.
"""
