"""The runbooks as data: every step a host or the controller runs, with its purpose,
commands, verification and undo (``model``, ``release``)."""
