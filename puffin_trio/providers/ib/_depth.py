"""IB's market depth rows, turned into price levels.

This module owns :class:`DepthRows`: TWS addresses depth by row position,
the events carry price levels, and this is where one becomes the other. It
must not build events or do I/O.
"""

from __future__ import annotations

__all__ = ["DepthRows"]

_Level = tuple[float, float]


class DepthRows:
    """IB's market depth rows of one request, converted to price-level changes.

    TWS addresses depth by *row position*: ``insert`` at row ``p`` shifts the
    rows from ``p`` down, ``delete`` at ``p`` shifts the rows below it up,
    ``update`` at ``p`` replaces the row (possibly with a new price). Rows are
    kept per side exactly as TWS describes them; the book we publish is those
    rows **aggregated by price** (SMART depth has one row per venue, so two
    rows can share a price, and a row can transiently repeat a price another
    row still holds while TWS moves rows around).

    Every operation touches at most two prices (the row's old and new
    price). For each, :meth:`apply` sums the sizes of the rows now at that
    price, in row order, and reports ``(price, total)``, or ``(price, 0.0)``
    when no row (or only empty rows) remain there. Shifting rows never
    changes a price's total, so after every call the published levels equal
    the rows aggregated by price, exactly: the same floats summed in the same
    order (the property tests check this against a naive row list).

    A side holds at most ``numRows`` rows (TWS's own bound), so the sums are
    short; :meth:`apply` costs O(rows). ``live`` is False until the first
    operation succeeded (the protocol then emits a snapshot).
    """

    __slots__ = ("_ask_levels", "_bid_levels", "asks", "bids", "live")

    def __init__(self) -> None:
        self.bids: list[_Level] = []
        self.asks: list[_Level] = []
        self._bid_levels: dict[float, float] = {}
        self._ask_levels: dict[float, float] = {}
        self.live = False

    def reset(self) -> None:
        """Forget every row (TWS error 317: depth reset)."""
        self.bids.clear()
        self.asks.clear()
        self._bid_levels.clear()
        self._ask_levels.clear()

    def apply(
        self, position: int, operation: int, side: int, price: float, size: float
    ) -> tuple[_Level, ...]:
        """Apply one TWS depth operation; return the price levels it changed on that side.

        ``operation``: 0 insert, 1 update, 2 delete; ``side``: 0 ask, 1 bid
        (TWS's codes). Raises ``ValueError`` for an unknown operation or side
        and for a position outside the rows (the rows are left unchanged).
        """
        if side == 1:
            rows, levels = self.bids, self._bid_levels
        elif side == 0:
            rows, levels = self.asks, self._ask_levels
        else:
            raise ValueError(f"depth side must be 0 (ask) or 1 (bid), not {side}")
        count = len(rows)
        if operation == 0:
            if not 0 <= position <= count:
                raise ValueError(f"depth insert at row {position} of {count}")
            rows.insert(position, (price, size))
            touched: tuple[float, ...] = (price,)
        elif operation == 1:
            if not 0 <= position < count:
                raise ValueError(f"depth update at row {position} of {count}")
            old = rows[position][0]
            rows[position] = (price, size)
            touched = (price,) if old == price else (old, price)
        elif operation == 2:
            if not 0 <= position < count:
                raise ValueError(f"depth delete at row {position} of {count}")
            touched = (rows.pop(position)[0],)
        else:
            raise ValueError(f"depth operation must be 0, 1 or 2, not {operation}")
        changes: list[_Level] = []
        for level in touched:
            total = 0.0
            for row_price, row_size in rows:
                if row_price == level:
                    total += row_size
            if total > 0:
                if levels.get(level) != total:
                    levels[level] = total
                    changes.append((level, total))
            elif level in levels:
                del levels[level]
                changes.append((level, 0.0))
        return tuple(changes)

    def levels(self) -> tuple[tuple[_Level, ...], tuple[_Level, ...]]:
        """The whole book: (bids best first, asks best first)."""
        bids = tuple(sorted(self._bid_levels.items(), reverse=True))
        asks = tuple(sorted(self._ask_levels.items()))
        return bids, asks
