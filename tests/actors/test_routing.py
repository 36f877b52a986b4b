"""Shard routing is stable, balanced and moves few keys when the count changes."""

from __future__ import annotations

import pytest

from actors.routing import actor_name, jump_hash, shard_for


class TestRouting:
    def test_stable(self) -> None:
        """A key maps to the same shard every time."""
        assert {shard_for("bln_42", 8) for _ in range(100)} == {shard_for("bln_42", 8)}

    def test_balanced(self) -> None:
        """10,000 keys spread within 15% of an even share over 8 shards."""
        counts = [0] * 8
        for i in range(10_000):
            counts[shard_for(f"key-{i}", 8)] += 1
        assert min(counts) > 1250 * 0.85
        assert max(counts) < 1250 * 1.15

    def test_growing_moves_only_what_must_move(self) -> None:
        """Going from 4 to 5 shards moves about a fifth of the keys, all to the new shard."""
        moved = [k for k in range(10_000) if shard_for(f"k{k}", 4) != shard_for(f"k{k}", 5)]
        assert all(shard_for(f"k{k}", 5) == 4 for k in moved)
        assert 1500 < len(moved) < 2500

    def test_one_shard_owns_everything(self) -> None:
        """With one shard every key goes to shard 0."""
        assert {shard_for(str(i), 1) for i in range(100)} == {0}

    @pytest.mark.parametrize("count", [0, 2000])
    def test_bad_counts(self, count: int) -> None:
        """Shard counts are bounded."""
        with pytest.raises(ValueError, match="shard count"):
            jump_hash(1, count)

    def test_actor_names(self) -> None:
        """Names follow `{kind}-shard-{index:03d}`."""
        assert actor_name("ledger", 7) == "ledger-shard-007"
        with pytest.raises(ValueError, match="index"):
            actor_name("ledger", -1)
