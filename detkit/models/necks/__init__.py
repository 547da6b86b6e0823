"""Necks: backbone levels -> the feature pyramid read by the heads."""
from detkit.models.necks.fpn import FPN

__all__ = ['FPN']
