"""Drive a scanning service's HTTP API with a list of steps and print its answers: run by test_expand_contract.py
in a subprocess whose PYTHONPATH is the previous release's tree (from git history), so every `services` and
`shared` import below is that release's code, not this checkout's.

    python tests/contracts/scanning_steps.py <database url> '<steps as JSON>' <answers file>

A step is [method, path, JSON body or null]. The app runs in-process (TestClient) on the given database, as a
dispatcher of jaipur, with a throwaway signing key loaded into its verifier (no auth service). Writes
{"code": <where services.scanning was imported from>, "answers": [{"status", "body"}, ...]} to the answers file
(stdout carries the app's JSON logs).
"""
from __future__ import annotations

import json
import sys

from fastapi.testclient import TestClient

import services.scanning
from services.scanning.app import create_app
from services.scanning.config import Settings
from tests.tokens import SigningKey


def main(database_url: str, steps: list) -> dict:
    key = SigningKey.generate("previous-release")
    settings = Settings(environment="test", database_url=database_url, redis_url=None, access_log=False,
                        auth_url="http://127.0.0.1:9")  # nobody there: the key is loaded below
    token = key.mint(sub="11", username="jai", role="dispatcher", area="jaipur")
    answers = []
    with TestClient(create_app(settings)) as client:
        client.app.state.verifier.load_jwks({"keys": [key.jwk()]})
        for method, path, body in steps:
            response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            answers.append({"status": response.status_code, "body": response.json() if response.content else None})
    return {"code": services.scanning.__file__, "answers": answers}


if __name__ == "__main__":
    database_url, steps, answers_file = sys.argv[1:]
    with open(answers_file, "w") as out:
        json.dump(main(database_url, json.loads(steps)), out)
