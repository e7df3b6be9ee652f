"""Values as rules see them and as JSON sends them (issue #14 item 7; README, "Types").

A bridge process on a real Postgres: what the rules compute from each value and what the fake
API receives, for the values JSON or Python has no plain form for.
"""

from __future__ import annotations

import json
import math
from typing import Any

from task_bridge.sources.postgres.slot import GENERATED_COLUMNS_MIN
from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

VALUES_DDL = """
CREATE DOMAIN d_int AS int;
CREATE DOMAIN d_num AS numeric(10, 2);
CREATE DOMAIN d_json AS jsonb;
CREATE DOMAIN d_pos AS d_int CHECK (VALUE > 0);
CREATE TABLE public.vals (
    id  int PRIMARY KEY,
    f8  float8,
    f4  real,
    tz  timetz,
    j   json,
    jb  jsonb,
    di  d_int,
    dn  d_num,
    dj  d_json,
    dd  d_pos,
    da  d_int[],
    g   int GENERATED ALWAYS AS (id * 2) STORED
);
"""
VALUE_RULES = """
rules:
  - name: vals
    table: public.vals
    on: [insert]
    actions:
      - op: upsert
        target: fragment
        uid: "v-{{ after.id }}"
        task:
          fields:
            f8: "{{ after.f8 }}"
            f4: "{{ after.f4 }}"
            f8_is_nan: "{{ after.f8 != after.f8 }}"
            tz: "{{ after.tz }}"
            tz_hour: "{{ after.tz.hour }}"
            j: "{{ after.j }}"
            jb: "{{ after.jb }}"
            big_plus_1: "{{ after.jb.big + 1 }}"
            di_plus_1: "{{ after.di + 1 }}"
            dn_times_2: "{{ after.dn * 2 }}"
            dj_x: "{{ after.dj.x }}"
            dd_plus_0: "{{ after.dd + 0 }}"
            da_sum: "{{ after.da | sum }}"
            has_g: "{{ 'g' in after }}"
"""
ROW = (
    "INSERT INTO vals (id, f8, f4, tz, j, jb, di, dn, dj, dd, da) VALUES"
    " ({id}, '{f8}', '{f4}', '12:34:56.5+05:30',"
    " '[1e400, -1e400, 1e-400, 123456789012345678901234567890, 0.5]',"
    ' \'{{"big": 123456789012345678901234567890, "neg": -98765432109876543210}}\','
    " 41, 1.25, '{{\"x\": 7}}', 3, '{{1,2,3}}')"
)
BIG = 123456789012345678901234567890


def _fields(env: BridgeEnv, uid: str) -> dict[str, Any] | None:
    task = env.fake.tasks().get(fragment_task_uuid(uid))
    return None if task is None else task["fields"]


def test_values_json_has_no_plain_form_for_are_sent_faithfully(bridge_env: BridgeEnv) -> None:
    """float NaN/±Infinity -> "NaN"/"Infinity"/"-Infinity" (never null); timetz -> ISO text
    with its offset; json/jsonb integers past 64 bits and numbers past a float's range ->
    the exact JSON number; domains (also over a domain, and arrays of one) -> their base type
    in rules; a generated column is in the event from 18 (the bridge's publication asks for
    it), absent before (pgoutput does not send it)."""
    env = bridge_env
    env.sql(VALUES_DDL)
    env.write_config(rules=VALUE_RULES)
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql(ROW.format(id=1, f8="NaN", f4="Infinity"), ROW.format(id=2, f8="-Infinity", f4="NaN"))
    wait_until(
        lambda: _fields(env, "v-1") is not None and _fields(env, "v-2") is not None,
        timeout=60,
        message=f"both rows delivered ({bridge.log_tail()})",
    )
    assert env.outbox_count("status = 'dead'") == 0, env.outbox_rows("status = 'dead'")
    one, two = _fields(env, "v-1"), _fields(env, "v-2")
    assert one is not None and two is not None
    assert (one["f8"], one["f4"], one["f8_is_nan"]) == ("NaN", "Infinity", True)
    assert (two["f8"], two["f4"]) == ("-Infinity", "NaN")
    assert one["tz"] == "12:34:56.500000+05:30" and one["tz_hour"] == 12
    assert one["jb"] == {"big": BIG, "neg": -98765432109876543210}
    assert one["big_plus_1"] == BIG + 1
    # the fake parses with Python's json: a number past a float's range reads back as ±inf,
    # a string would stay a string and null None
    assert one["j"][:2] == [math.inf, -math.inf] and one["j"][3:] == [BIG, 0.5]
    assert one["di_plus_1"] == 42 and one["dn_times_2"] == "2.50" and one["dj_x"] == 7
    assert one["dd_plus_0"] == 3 and one["da_sum"] == 6
    generated = env.query("SHOW server_version_num")[0][0]
    assert one["has_g"] is (int(generated) >= GENERATED_COLUMNS_MIN)
    # the exact text, as stored and sent
    (stored,) = [r["payload"] for r in env.outbox_rows("uid = 'v-1'")]
    assert '"j":[1E+400,-1E+400,1E-400,123456789012345678901234567890,0.5]' in stored
    assert json.loads(stored)["fields"]["f8"] == "NaN"
