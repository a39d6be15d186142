"""The fake Messages API answers each incident from its own route, so an end-to-end
test with two incidents gets the right fix for each whatever order medic asks in."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from fake_anthropic import FakeAnthropic, text


def ask(fake: FakeAnthropic, words: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"messages": [{"role": "user", "content": words}]}).encode()
    request = urllib.request.Request(f"{fake.url}/v1/messages", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def said(reply: dict[str, Any]) -> str:
    return str(reply["content"][0]["text"])


def test_a_request_is_answered_from_the_route_its_body_names_in_each_routes_order() -> None:
    fake = FakeAnthropic(
        [text("from the script")],
        routes={
            "no attribute 'serv_forever'": [text("app 1"), text("app 2")],
            "name 'prot' is not defined": [text("api 1")],
        },
    )
    with fake.running():
        api = ask(fake, "log: NameError: name 'prot' is not defined")
        app = ask(fake, "log: no attribute 'serv_forever'")
        other = ask(fake, "log: something else")
        app_again = ask(fake, "log: no attribute 'serv_forever', resent")
        api_again = ask(fake, "log: name 'prot' is not defined, resent")

    assert [said(r) for _, r in (api, app, other, app_again)] == [
        "api 1",
        "app 1",
        "from the script",
        "app 2",
    ]
    # A route that ran out does not borrow from the script or another route.
    assert api_again[0] == 500
    assert "ran out" in api_again[1]["error"]["message"]


def test_a_request_naming_two_routes_gets_an_error_not_either_answer() -> None:
    fake = FakeAnthropic([], routes={"app": [text("app")], "api": [text("api")]})
    with fake.running():
        status, reply = ask(fake, "app and api")

    assert status == 500
    assert "matches the routes ['app', 'api']" in reply["error"]["message"]
    assert [len(replies) for replies in fake.routes.values()] == [1, 1]
