"""The hot reads' connections are a total over the API's workers."""

from __future__ import annotations

import pytest

from procwatch_api.settings import ApiSettings


@pytest.mark.parametrize(("total", "workers", "each"), [(4, 1, 4), (4, 2, 2), (4, 3, 2), (4, 8, 1), (1, 1, 1)])
def test_each_worker_gets_its_share_of_the_read_connections(total, workers, each):
    assert ApiSettings(read_pool_size=total, workers=workers).read_pool_size_per_worker == each
