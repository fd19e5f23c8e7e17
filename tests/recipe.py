"""The synthetic-weight recipe of ../shared/golden/README.md, as tests use it (one home:
depthcli.checkpoints.synthetic)."""

from __future__ import annotations

from depthcli.checkpoints.synthetic import recipe_state_dict

__all__ = ["recipe_state_dict"]
