"""One retry path for every caller that runs requests in batches (the server's batcher, evaluation,
the lmms-eval plugin): a batch that fails is run again one item at a time, so that an item that
fails fails alone and every other item gets the result it gets alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Out = TypeVar("Out")


def run_isolated(
    run: Callable[[list[Item]], Sequence[Out]],
    items: list[Item],
    catch: tuple[type[BaseException], ...] = (Exception,),
) -> list[Out | BaseException]:
    """``run(items)``; where that raises one of ``catch``, ``run([item])`` for each item. Returns
    each item's result, or the exception it raised when run alone."""
    try:
        return list(run(items))
    except catch as err:
        if len(items) == 1:
            return [err]
    out: list[Out | BaseException] = []
    for item in items:
        try:
            out.extend(run([item]))
        except catch as err:
            out.append(err)
    return out
