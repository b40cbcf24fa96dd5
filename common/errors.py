"""The one base class for a request that cannot be honoured as asked (bad input, an unknown
name, a state that forbids it): its message is one line for a person, and nothing was
written. Commands turn it into `CommandError`, the admin and the dashboard into a message."""


class OperationError(Exception):
    pass
