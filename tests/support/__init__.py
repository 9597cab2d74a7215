"""Helpers shared by the test packages: isolated stacks and their services (``stacks``), stages
run in-process on their host (``stages``), a stage pipeline over the real broker (``pipeline``),
end-to-end helpers (``e2e``) and condition waits (``wait``)."""
