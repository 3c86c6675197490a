"""benchsuite's built-in pruning methods, registered through the ``benchsuite.methods`` entry points."""
