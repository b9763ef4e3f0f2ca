"""The worker's side of the hive conversation, the transports it runs over, and a stub hive.

- `client`: the `HiveClient` protocol every transport implements;
- `connect`: `hive_client_for` and `queen_client_for`, the clients the settings ask for;
- `http_client`: POSTs to an http(s):// hive; `ws_client`: one WebSocket to a ws(s):// hive;
- `queen_client`: rbee's queen heartbeat; `json_post`: the httpx transport both POST over;
- `vitals`: what only the HeartbeatActor knows, for `GET /heartbeat`;
- `scripted`: a hive scripted in virtual time, for the scenario harness;
- `stub`: a small reference hive; `stub_cli`: its command, `llm-worker-rbee hive-stub`.

The HeartbeatActor (`actors/heartbeat.py`) drives the conversation; docs/HIVE_PROTOCOL.md
describes it.
"""

from llm_worker_rbee.hive.client import HiveClient, HiveListener
from llm_worker_rbee.hive.connect import hive_client_for
from llm_worker_rbee.hive.vitals import Vitals

__all__ = ["HiveClient", "HiveListener", "Vitals", "hive_client_for"]
