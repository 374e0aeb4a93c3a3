"""The one exception type the launchers turn into a clear message and a non-zero exit status."""


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
