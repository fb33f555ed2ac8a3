"""What a decode reserves before it starts and gives back when its worker is done: its memory,
out of one budget for every decode in progress, estimated from its header (checks.py). The
expensive lane's slots are a plain Budget (service/pipeline/budget.py, decoder.py)."""

from __future__ import annotations

from service.config import MiB
from service.errors import ImageTooLarge
from service.pipeline.budget import Budget
from service.pipeline.decode.checks import DecodePlan


class DecodeBudget(Budget):
    """Bytes of decode memory in use, reserved from each upload's plan."""

    def check(self, plan: DecodePlan) -> None:
        """413 now if ``plan``'s memory could never fit, rather than after a wait."""
        if plan.memory_bytes > self.total:
            raise ImageTooLarge(
                f"decoding this {plan.width}x{plan.height} {plan.mode} image takes about "
                f"{plan.memory_bytes // MiB} MiB, over the decode memory limit of "
                f"{self.total // MiB} MiB"
            )

    async def acquire(self, plan: DecodePlan) -> None:
        """Reserve ``plan``'s memory, waiting until it fits; 413 if it never could."""
        self.check(plan)
        await self.take(plan.memory_bytes)

    def try_acquire(self, plan: DecodePlan) -> bool:
        """Reserve ``plan``'s memory only if that needs no wait (any thread)."""
        return self.try_take(plan.memory_bytes)

    def release(self, plan: DecodePlan) -> None:
        """On the event loop: the memory is free again."""
        self.give(plan.memory_bytes)
