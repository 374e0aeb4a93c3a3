"""The exception types the launchers turn into one clear line and a non-zero exit status."""

import signal

#: The exit status of a launcher whose training diverged: the algorithm stopped with
#: :class:`~sb3_apo.common.on_policy.NonFiniteLossError` (a non-finite loss, gradient or
#: rollout). The same command with the same seed trains the same way and diverges again, so the
#: benchmark runner records such a run as diverged (``diverged.json``) and does not retry it.
EXIT_DIVERGED = 3


class ZooError(Exception):
    """
    A problem with the user's input or surroundings (an unknown environment, a
    malformed hyperparameter file, a storage that cannot be reached, ...).

    The launchers print its message, without a traceback, and exit with a
    non-zero status.

    :param message: what went wrong and, where possible, how to fix it
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Interrupted(ZooError):
    """
    A tuning worker stopped by Ctrl-C or SIGTERM, after releasing its trial for retry.

    The launchers print its message and exit with ``exit_status`` (128 + the signal
    number, as a shell reports a process ended by that signal).

    :param message: what happened to the running trial and to the study
    :param exit_status: the exit status
    """

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def interrupting_signal(interrupt: KeyboardInterrupt) -> signal.Signals:
    """
    The signal behind a ``KeyboardInterrupt``: the launchers raise one named after the
    signal for SIGTERM (``KeyboardInterrupt("SIGTERM")``); Python raises a bare one for Ctrl-C.

    :param interrupt: the interruption
    :return: the signal (``SIGINT`` unless the interruption names another)
    """
    return signal.Signals.__members__.get(str(interrupt), signal.SIGINT)
