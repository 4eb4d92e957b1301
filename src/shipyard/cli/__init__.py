"""The ``shipyard`` command line: argument handling and printing over the library API."""
