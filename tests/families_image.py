"""Tiny image pipelines for the family checks (see families.py for the contract)."""

from __future__ import annotations

from typing import Any

import torch

from families import STEPS, Family, _seeded

FAMILIES: dict[str, Family] = {}
