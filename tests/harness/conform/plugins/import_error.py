"""Needs a library that is not installed: loading it is one error naming the plugin (exit 2)."""

import attnbench_no_such_kernel_library  # noqa: F401
