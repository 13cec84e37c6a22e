"""Training recipes that do not fit in their paper's model file (which stays ~300 lines):
the loop wiring, data, checkpointing and test-time use of one paper each."""
