"""Landlock builder (placeholder: the full builder lands with the Landlock issue)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from ._ruleset import RuleSet


class Compat(enum.Enum):
    BEST_EFFORT = "best_effort"
    HARD = "hard"


@dataclass(frozen=True)
class LandlockPlan:
    """Plain data: what to ask the kernel for."""

    compat: str


@dataclass(frozen=True)
class LandlockStatus:
    enforcement: str  # "full", "partial" or "none"
    abi: int
    dropped: tuple[str, ...] = ()


class Landlock(RuleSet):
    kind: ClassVar[str] = "implied"

    @classmethod
    def merge(cls, parts: list[Landlock]) -> Landlock:
        return parts[0]

    def landlock(self) -> Landlock:
        return self

    def plan(self, compat: Compat) -> LandlockPlan:
        return LandlockPlan(compat.value)


def apply_plan(plan: LandlockPlan, *, all_threads: bool = False) -> LandlockStatus:
    return LandlockStatus("none", 0)
