from collections.abc import Iterator
from typing import Any

def count_run(pairs: Iterator[Any], counts: dict[Any, int], value: Any, limit: int, /) -> tuple[int, tuple[Any, ...]]: ...
