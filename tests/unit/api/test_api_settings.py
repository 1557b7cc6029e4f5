"""The hot reads' connections: a total over the API's workers, or by default 4 for one worker and 1 each
for more."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from procwatch_api.settings import ApiSettings


@pytest.mark.parametrize(("total", "workers", "each"), [(4, 1, 4), (4, 2, 2), (4, 3, 2), (4, 8, 1), (1, 1, 1)])
def test_each_worker_gets_its_share_of_the_read_connections(total, workers, each):
    assert ApiSettings(read_pool_size=total, workers=workers).read_pool_size_per_worker == each


@pytest.mark.parametrize(("workers", "each"), [(1, 4), (2, 1), (4, 1)])
def test_unset_one_worker_gets_four_and_several_get_one_each(workers, each):
    assert ApiSettings(workers=workers).read_pool_size_per_worker == each


def test_a_read_pool_of_zero_is_refused():
    with pytest.raises(ValidationError):
        ApiSettings(read_pool_size=0)
