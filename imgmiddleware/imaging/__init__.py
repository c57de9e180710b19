"""Pixel primitives that know nothing of OSS: probe, decode, orientation, resampling, encode."""
