"""`lorebot doctor` and the Redis checks never print the Redis password."""

from __future__ import annotations

import pytest

from lorebot.errors import LorebotError
from tests.conftest import make_settings

PASSWORD = "doctor-s3cret-pw"


@pytest.mark.parametrize("port", ["reachable", "closed"])
def test_redis_check_output_masks_the_password(tmp_path, redis_server, port):
    from lorebot.cli.doctor import check_redis
    from lorebot.cli.stack import free_port, require_redis

    where = redis_server.port if port == "reachable" else free_port()
    # The test server has no password: AUTH fails, as with a wrong one.
    settings = make_settings(tmp_path, f"redis://lorebot:{PASSWORD}@127.0.0.1:{where}/0")
    check = check_redis(settings)
    assert PASSWORD not in f"{check.detail} {check.fix}"
    with pytest.raises(LorebotError) as err:
        require_redis(settings)
    assert PASSWORD not in err.value.one_line()
