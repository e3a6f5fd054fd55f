"""The ``octo`` command: parses arguments, makes one call into octostore.api, prints, exits."""
