"""Channel selection for split layers: which channels of a `[shared | g0 | g1 | ... ]` layer a group uses.

A path's channels are not a prefix of the layer (unlike OFA or slimmable nets), so every split
layer gathers them. Group 0's active set `shared ∪ g0` happens to be contiguous and is taken as
a view; the others are gathered with a cached index tensor, built once per (width, group, device).
"""

from __future__ import annotations

import torch

from sdr_model.config import SDRConfig

__all__ = ["channel_index", "select_channels"]

_INDEX_CACHE: dict[tuple[int, int, int, int, str], torch.Tensor] = {}


def channel_index(config: SDRConfig, width: int, group: int, device: torch.device) -> torch.Tensor:
    """Indices of the channels group `group` uses in a split layer of `width` channels."""
    shared, gw = config.shared_width(width), config.group_width(width)
    key = (width, shared, gw, group, str(device))
    index = _INDEX_CACHE.get(key)
    if index is None:
        start = shared + group * gw
        # A normal tensor even when first built under inference_mode (routing): the cache outlives
        # that context, and autograd refuses to save inference tensors for a later training step.
        with torch.inference_mode(False):
            index = torch.cat([torch.arange(shared), torch.arange(start, start + gw)]).to(device)
        _INDEX_CACHE[key] = index
    return index


def select_channels(t: torch.Tensor, dim: int, config: SDRConfig, group: int) -> torch.Tensor:
    """The slice of `t` along `dim` that group `group` of a split layer uses.

    Args:
        t: a tensor whose dimension `dim` spans the whole split layer (supernet width).
        dim: the channel dimension to select along.
        config: gives the shared fraction and group count.
        group: individual group id, 0..G-1.
    """
    width = t.shape[dim]
    if group == 0:  # shared ∪ g0 is the contiguous head of the layer: a view, no copy
        return t.narrow(dim, 0, config.active_width(width))
    return t.index_select(dim, channel_index(config, width, group, t.device))
