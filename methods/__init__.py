"""benchsuite's built-in pruning methods, registered through ``benchsuite.methods`` entry points."""
