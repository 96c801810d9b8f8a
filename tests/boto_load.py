"""boto3 PutItems through a router until SIGTERM, in a process of its own.

The operator end-to-end test runs the operator, the API emulator and the test kubelet in one
event loop; a client load in threads of that process would share its GIL and slow the system
under test. Each acknowledged put is a line `ack <pk> <n>` in OUT (flushed at once); a put that
fails after boto3's own retries is a line `fail <error>` and is retried with the same item, so
every key the writers move past was acknowledged.

    python -P tests/boto_load.py ENDPOINT TABLE OUT [WORKERS]
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def client(endpoint: str):
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(retries={"max_attempts": 10, "mode": "standard"},
                                      connect_timeout=5, read_timeout=15))


def main() -> int:
    endpoint, table, out = sys.argv[1:4]
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counter = itertools.count()
    lock = threading.Lock()
    fh = open(out, "a", buffering=1)

    def emit(line: str) -> None:
        with lock:
            fh.write(line + "\n")

    def run() -> None:
        ddb = client(endpoint)
        while not stop.is_set():
            i = next(counter)
            pk = f"k{i:06d}"
            while not stop.is_set():
                try:
                    ddb.put_item(TableName=table, Item={"pk": {"S": pk}, "n": {"N": str(i)}})
                except (ClientError, BotoCoreError) as e:
                    emit("fail " + repr(e)[:200].replace("\n", " "))
                    time.sleep(0.05)
                    continue
                emit(f"ack {pk} {i}")
                break
            time.sleep(0.002)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.2)
    for t in threads:
        t.join(30)
    fh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
