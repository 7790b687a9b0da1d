"""The two instances of the loyalty system and the MSISDN range each one owns.

The operator runs Aurora Loyalty twice, split by number range (the first three digits of the
national number), so the hub must route each MSISDN to the instance that owns it. The dataset's
China Mobile blocks fall on both sides: 134-159 (13 blocks) to the north, 165-198 (11) to the
south.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instance:
    """One running copy of MemberService: its name, its MSISDN block range, its default port."""

    name: str
    first_block: int
    last_block: int
    default_port: int

    def owns(self, msisdn_e164: str) -> bool:
        """Whether a ``+86`` E.164 MSISDN falls in this instance's blocks."""
        block = msisdn_e164[3:6]
        return block.isdigit() and self.first_block <= int(block) <= self.last_block


NORTH = Instance("loyalty-north", 130, 159, 8104)
SOUTH = Instance("loyalty-south", 160, 199, 8105)
INSTANCES = (NORTH, SOUTH)
