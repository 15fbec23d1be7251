"""Retries with back-off for Docker API calls that failed for reasons that may pass.

A semantic refusal (404, 409, "update out of sequence") is not retried here: the pass reports it
and the next pass, which lists the state again, decides anew.
"""

from __future__ import annotations

import docker.errors
import requests
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential


def transient(error: BaseException) -> bool:
    if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(error, docker.errors.APIError) and error.status_code:
        text = str(error.explanation or "")
        return error.status_code >= 500 and "out of sequence" not in text
    return False


docker_call = retry(
    retry=retry_if_exception(transient),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.2, max=3),
    reraise=True,
)
