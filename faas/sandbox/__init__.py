"""Process creation and limits for execution environments."""
