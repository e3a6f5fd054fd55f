"""A word count whose workers wait for each other, so a test sees every worker join however fast
the job runs.  Each worker process, after its first pair, registers in $OCTO_TEST_RENDEZVOUS and
waits (at most 60 s) until $OCTO_TEST_RENDEZVOUS_WORKERS (default 2) have.  The wait comes after
the first pair because the coordinator's contract check draws only that one, in its own process.
Without the variable (the oracle runs the job in the test process) it is a plain word count."""
import os
import time

source = {i: f"octo {'pus ' * (i % 5)}ink{i % 7}" for i in range(400)}
registered = []


def rendezvous():
    folder = os.environ.get("OCTO_TEST_RENDEZVOUS")
    if not folder or registered:
        return
    registered.append(os.getpid())
    open(os.path.join(folder, str(os.getpid())), "w").close()
    expected = int(os.environ.get("OCTO_TEST_RENDEZVOUS_WORKERS", "2"))
    deadline = time.monotonic() + 60
    while len(os.listdir(folder)) < expected and time.monotonic() < deadline:
        time.sleep(0.02)


def mapfn(key, value):
    words = value.split()
    yield words[0], 1
    rendezvous()
    for word in words[1:]:
        yield word, 1


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)
