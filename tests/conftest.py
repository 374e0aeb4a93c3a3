import os
import pickle
import tempfile

import pytest
import torch as th
from _pytest.runner import runtestprotocol


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The suite runs tests in parallel processes on small machines: one thread each.
    th.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "forked: run the test in a process forked for it, so that what it leaves running (Ray's threads) "
        "never reaches the tests that run after it in the same pytest process",
    )


# pytest-forked does this, but its 1.7.5 cannot serialise pytest 9's reports: this runs the test in a
# forked child and sends its reports back with pytest's own serialisation hooks, as pytest-xdist does.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if item.get_closest_marker("forked") is None:
        return None
    hook, config = item.ihook, item.config
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    with tempfile.TemporaryFile() as sent_file:  # not a pipe: a process the test left behind would hold it open
        pid = os.fork()
        if pid == 0:  # the child: run the test, write its reports, and leave without any exit handler
            try:
                reports = runtestprotocol(item, log=False)
                pickle.dump([config.hook.pytest_report_to_serializable(config=config, report=r) for r in reports], sent_file)
                sent_file.flush()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        sent_file.seek(0)
        sent = sent_file.read()
    if sent:
        reports = [config.hook.pytest_report_from_serializable(config=config, data=data) for data in pickle.loads(sent)]
    else:
        ended = (
            f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}"
        )
        reports = [
            pytest.TestReport(
                item.nodeid,
                item.location,
                dict.fromkeys(item.keywords, 1),
                "failed",
                f"the test's forked process ended ({ended}) before it reported",
                "call",
            )
        ]
    for report in reports:
        hook.pytest_runtest_logreport(report=report)
    # As pytest's own protocol ends an item: tear down what the next item does not share.
    item.session._setupstate.teardown_exact(nextitem)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
